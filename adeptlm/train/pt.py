"""`adept pt`: continued pre-training on subject text.

Documents (see data/corpus.py) are tokenized, each opened by the tokenizer's BOS where it adds one
and closed by one end-of-text token, and packed into block_size blocks; the final shorter block is
kept (padded and masked at batch time), so no text is dropped. With --packing documents (the
default) each document attends only to itself inside its block and every token but a document's
first is trained; with --packing stream, blocks attend across documents and every token is trained,
as in the seed. The packed blocks are cached under a fingerprint of the files, the tokenizer and the
settings.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..data.corpus import corpus_files, read_corpus_file
from ..errors import AdeptError
from ..data.tokenize import cached, end_of_text_id, fingerprint, pack_documents
from .args import TrainConfig
from .common import PackedCollator, load_model_for_training, log, train_and_save
from .stages import Stage


def run_pt(cfg: TrainConfig) -> dict:
    if not cfg.data.dataset_dir:
        raise AdeptError("adept pt needs --dataset_dir: a directory of .txt files or a .jsonl/.json file with 'text'")
    files = corpus_files(Path(cfg.data.dataset_dir))
    docs = [d for f in files for d in read_corpus_file(f)]  # validate before loading the model
    model, tokenizer = load_model_for_training(cfg)
    limit = min(x for x in (getattr(tokenizer, "model_max_length", None) or 10**9,
                            getattr(model.config, "max_position_embeddings", None) or 10**9))
    block_size = min(cfg.data.block_size or 1024, limit)
    if cfg.data.block_size and block_size < cfg.data.block_size:
        log(f"block_size {cfg.data.block_size} exceeds the model's limit; using {block_size}")
    isolate = cfg.data.packing == "documents"
    # format 2: BOS per document; 3: Gemma's documents closed by <eos>, position_ids when isolated;
    # 4: isolated documents packed whole (best fit)
    settings = {"stage": "pt", "block_size": block_size, "eot": end_of_text_id(tokenizer), "format": 4,
                "packing": cfg.data.packing}
    fp = fingerprint(files, tokenizer, settings)
    cache_dir = Path(cfg.data.data_cache_dir or Path(cfg.training.output_dir) / "data_cache")

    def build():
        ds, stats = pack_documents(docs, tokenizer, block_size, cfg.data.preprocessing_num_workers, isolate)
        return ds, asdict(stats)

    ds, stats, hit = cached(cache_dir, "pt", fp, build)
    log(f"{'loaded cached' if hit else 'tokenized'} corpus: {stats['documents']} documents, {stats['tokens']} "
        f"tokens, {stats['blocks']} blocks of up to {block_size}"
        + (f" ({stats['padding']} padding tokens)" if stats["padding"] else ""))
    eval_ds = None
    frac = cfg.data.validation_split_percentage
    if frac and frac > 0 and len(ds) >= 2:
        n_eval = max(1, round(frac * len(ds)))
        split = ds.train_test_split(test_size=n_eval, seed=cfg.training.seed, shuffle=True)
        ds, eval_ds = split["train"], split["test"]
        if cfg.data.max_eval_samples:
            eval_ds = eval_ds.select(range(min(cfg.data.max_eval_samples, len(eval_ds))))
    if cfg.data.max_train_samples:
        ds = ds.select(range(min(cfg.data.max_train_samples, len(ds))))
    info = {"files": [str(f) for f in files], "fingerprint": fp, "block_size": block_size, **stats,
            "train_blocks": len(ds), "eval_blocks": len(eval_ds) if eval_ds is not None else 0,
            "packing": cfg.data.packing}
    return train_and_save(cfg, "pt", model, tokenizer, ds, eval_ds, info,
                          collator=PackedCollator(tokenizer) if isolate else None)


def _config():
    from transformers import TrainingArguments

    return TrainingArguments


STAGE = Stage(
    "pt", "continued pre-training on subject text (LoRA, QLoRA, full)",
    "Continued pre-training on subject text with LoRA, QLoRA or full weights. Documents are tokenized with an "
    "end-of-text token between them and packed whole into --block_size blocks (best fit), each document attending "
    "only to itself (--packing stream: joined, cut and attending across documents, as the seed); the tokenized data "
    "is cached by a fingerprint of the files, tokenizer and settings. Takes a YAML config as first argument and/or "
    "flags (flags win); the seed's flag names work as written.",
    data="corpus", config=_config, run=run_pt, kl_to_base=True, settings=("learning_rate",))
