"""`adept dpo`: preference tuning on TRL's DPOTrainer.

Pairs come from the preference readers (data/preferences.py) in any of their shapes and are handed
to TRL as conversations, so TRL renders them with the chat template this run fixes on the tokenizer
(the model's own, or --template) and trains only the replies. With LoRA there is no second model
in memory: TRL (1.16) keeps a frozen copy of the starting adapter as adapter "ref" and scores the
reference with it. So with --peft_path the reference is the SFT policy, as standard DPO anchors it
(tests/unit/test_dpo.py: the first step's rewards are zero), and a fresh adapter's reference is
the base (its B matrices start at zero). The copy is dropped before saving. Outputs are as for
sft: adapter or model, run.json (with reward accuracy and margins), checkpoints to resume from.
"""

from __future__ import annotations

from pathlib import Path

from ..data.corpus import JSON_SUFFIXES
from ..errors import AdeptError, InputError
from ..data.preferences import read_preferences
from ..data.tokenize import fingerprint
from ..templates import get_template
from .args import TrainConfig
from .common import load_model_for_training, log, train_and_save


def preference_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in JSON_SUFFIXES)
        if files:
            return files
        raise InputError(root, "empty directory: expected .json or .jsonl preference files")
    raise InputError(root, "no such file or directory")


def to_records(pairs, tokenizer, max_prompt_length: int | None) -> tuple[list[dict], int]:
    """TRL's conversational preference records; pairs with over-long prompts are dropped and counted."""
    out, dropped = [], 0
    for p in pairs:
        if max_prompt_length:
            n = len(tokenizer.apply_chat_template(p.prompt, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
            if n > max_prompt_length:
                dropped += 1
                continue
        out.append({"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                    "rejected": [{"role": "assistant", "content": p.rejected}]})
    return out, dropped


def run_dpo(cfg: TrainConfig) -> dict:
    from datasets import Dataset
    from trl import DPOTrainer

    if not cfg.data.dataset_dir:
        raise AdeptError("adept dpo needs --dataset_dir: a directory of .json/.jsonl preference files, or one file")
    files = preference_files(Path(cfg.data.dataset_dir))
    shapes, pairs = {}, []
    for f in files:  # read and validate everything before loading the model
        shape, got = read_preferences(f)
        shapes[f.name] = shape
        pairs.extend(got)
    val_pairs = read_preferences(Path(cfg.data.validation_file))[1] if cfg.data.validation_file else None
    model, tokenizer = load_model_for_training(cfg)
    template = get_template(tokenizer, cfg.model.template)
    tokenizer.chat_template = template.jinja  # TRL renders with it; saved with the adapter for inference
    records, dropped = to_records(pairs, tokenizer, cfg.data.max_prompt_length)
    if dropped:
        log(f"dropped {dropped} of {len(pairs)} pairs whose prompt is over --max_prompt_length "
            f"{cfg.data.max_prompt_length} tokens")
    if not records:
        raise AdeptError("no preference pairs left to train on after --max_prompt_length")
    if cfg.data.max_train_samples:
        records = records[: cfg.data.max_train_samples]
    train_ds = Dataset.from_list(records)
    eval_ds = Dataset.from_list(to_records(val_pairs, tokenizer, cfg.data.max_prompt_length)[0]) if val_pairs \
        else None
    log(f"{len(records)} preference pairs from {len(files)} file(s) ({', '.join(sorted(set(shapes.values())))}), "
        f"template {template.name}, beta {cfg.training.beta}, loss {cfg.training.loss_type}")
    data_info = {"files": [str(f) for f in files], "shapes": shapes, "pairs": len(pairs), "train_pairs": len(records),
                 "dropped_long_prompts": dropped, "template": template.name,
                 "fingerprint": fingerprint(files, tokenizer, {"stage": "dpo", "template": template.jinja})}
    return train_and_save(cfg, "dpo", model, tokenizer, train_ds, eval_ds, data_info, trainer_class=DPOTrainer)
