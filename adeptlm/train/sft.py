"""`adept sft`: instruction tuning.

Records are rendered with the chat template (data/instructions.py, templates.py): only assistant
replies and their end-of-turn token are trained, in every turn. Over-long records are truncated
and counted (or dropped with --truncation drop). Batches group records of similar length and pad
only to the longest in the batch, so no example attends to another and little compute goes to
padding. A --validation_file that also sits in dataset_dir is left out of training.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..data.corpus import JSON_SUFFIXES
from ..errors import AdeptError, InputError
from ..data.instructions import read_instructions
from ..data.tokenize import cached, encode_distilled, encode_records, fingerprint
from ..templates import get_template
from .args import TrainConfig
from .common import FlatCollator, load_model_for_training, log, train_and_save
from .stages import Stage


def instruction_files(cfg: TrainConfig) -> list[Path]:
    root = Path(cfg.data.dataset_dir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in JSON_SUFFIXES)
        if not files:
            raise InputError(root, "empty directory: expected .json or .jsonl instruction files")
    else:
        raise InputError(root, "no such file or directory")
    if cfg.data.validation_file:
        val = Path(cfg.data.validation_file).resolve()
        if val in [f.resolve() for f in files]:
            files = [f for f in files if f.resolve() != val]
            log(f"{cfg.data.validation_file} sits in dataset_dir: it is used for evaluation only, not trained on")
            if not files:
                raise AdeptError(f"{root}: the only data file is the validation file; nothing is left to train on")
    return files


def run_sft(cfg: TrainConfig) -> dict:
    if not cfg.data.dataset_dir:
        raise AdeptError("adept sft needs --dataset_dir: a directory of .json/.jsonl instruction files, or one file")
    files = instruction_files(cfg)
    convs = [c for f in files for c in read_instructions(f)[1]]  # validate before loading the model
    val_convs = read_instructions(Path(cfg.data.validation_file))[1] if cfg.data.validation_file else None
    distilled = read_instructions(Path(cfg.data.distill_file))[1] if cfg.data.distill_file else None
    model, tokenizer = load_model_for_training(cfg)
    template = get_template(tokenizer, cfg.model.template)
    tokenizer.chat_template = template.jinja  # saved with the output, so inference renders exactly as trained
    settings = {"stage": "sft", "max_seq_length": cfg.data.max_seq_length, "truncation": cfg.data.truncation,
                "template": template.jinja, "eot": template.eot, "format": 1}
    fp = fingerprint(files + ([Path(cfg.data.distill_file)] if distilled is not None else []), tokenizer,
                     {**settings, "distill": distilled is not None})
    cache_dir = Path(cfg.data.data_cache_dir or Path(cfg.training.output_dir) / "data_cache")
    nproc = cfg.data.preprocessing_num_workers

    def build(records):
        def inner():
            ds, stats = encode_records(records, tokenizer, template, cfg.data.max_seq_length, cfg.data.truncation,
                                       nproc)
            return ds, asdict(stats)
        return inner

    def build_with_distilled():
        from datasets import concatenate_datasets

        ds, stats = build(convs)()
        dds, cut = encode_distilled(distilled, tokenizer, template, cfg.data.max_seq_length, nproc)
        ds = ds.add_column("distill", [[0] * n for n in ds["length"]])
        stats.update(distilled_records=len(dds), distilled_tokens=sum(dds["length"]), distilled_truncated=cut)
        return concatenate_datasets([ds, dds.cast(ds.features)]), stats

    ds, stats, hit = cached(cache_dir, "sft", fp, build(convs) if distilled is None else build_with_distilled)
    log(f"{'loaded cached' if hit else 'rendered'} {stats['records']} records with template {template.name}: "
        f"{stats['tokens']} tokens, {stats['trained_tokens']} trained")
    if distilled is not None:
        log(f"{stats['distilled_records']} records of {cfg.data.distill_file} to distil: {stats['distilled_tokens']} "
            f"positions held to the base model's distribution (weight {cfg.lora.distill_weight:g})")
    for w in stats["warnings"]:
        log(f"warning: {w}")
    eval_ds = None
    if val_convs is not None:
        vfp = fingerprint([Path(cfg.data.validation_file)], tokenizer, settings)
        eval_ds, _, _ = cached(cache_dir, "sft-eval", vfp, build(val_convs))
        if cfg.data.max_eval_samples:
            eval_ds = eval_ds.select(range(min(cfg.data.max_eval_samples, len(eval_ds))))
    if cfg.data.max_train_samples:
        ds = ds.select(range(min(cfg.data.max_train_samples, len(ds))))
    if len(ds) == 0:
        raise AdeptError("no training records left after truncation/dropping")
    info = {"files": [str(f) for f in files], "fingerprint": fp, "template": template.name, **stats,
            "train_records": len(ds), "eval_records": len(eval_ds) if eval_ds is not None else 0}
    if cfg.training.padding_free:
        log("padding-free batches: each batch's records in one row, positions restarting per record")
    return train_and_save(cfg, "sft", model, tokenizer, ds, eval_ds, info,
                          collator=FlatCollator() if cfg.training.padding_free else None)


def _config():
    from .sft_args import SFTArguments  # TrainingArguments plus --padding_free

    return SFTArguments


STAGE = Stage(
    "sft", "instruction tuning with loss on assistant replies",
    "Instruction tuning (SFT) with LoRA, QLoRA or full weights. Records are rendered with the chat template and "
    "only assistant replies (with their end-of-turn token) are trained; batches group records of similar length. "
    "Takes a YAML config as first argument and/or flags (flags win); the seed's flag names work as written.",
    data="instructions", config=_config, run=run_sft, kl_to_base=True, settings=("learning_rate",))
