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
from .stages import DATA_KINDS, Stage


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


def read_pairs(cfg: TrainConfig, stage: str):
    """The run's preference pairs (all files read and checked before the model loads) and its
    validation pairs: (files, shapes by file, pairs, validation pairs or None)."""
    if not cfg.data.dataset_dir:
        raise AdeptError(f"adept {stage} needs --dataset_dir: {DATA_KINDS['preferences']}")
    files = preference_files(Path(cfg.data.dataset_dir))
    shapes, pairs = {}, []
    for f in files:
        shape, got = read_preferences(f)
        shapes[f.name] = shape
        pairs.extend(got)
    val_pairs = read_preferences(Path(cfg.data.validation_file))[1] if cfg.data.validation_file else None
    return files, shapes, pairs, val_pairs


def train_on_pairs(cfg: TrainConfig, stage: str, trainer_class, settings: str) -> dict:
    """Load the model, render the pairs as TRL's conversational records and train with trainer_class
    (a TRL preference trainer taking prompt/chosen/rejected); `settings` goes in the log line."""
    from datasets import Dataset

    files, shapes, pairs, val_pairs = read_pairs(cfg, stage)
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
        f"template {template.name}, {settings}")
    data_info = {"files": [str(f) for f in files], "shapes": shapes, "pairs": len(pairs), "train_pairs": len(records),
                 "dropped_long_prompts": dropped, "template": template.name,
                 "fingerprint": fingerprint(files, tokenizer, {"stage": stage, "template": template.jinja})}
    return train_and_save(cfg, stage, model, tokenizer, train_ds, eval_ds, data_info, trainer_class=trainer_class)


def run_dpo(cfg: TrainConfig) -> dict:
    from trl import DPOTrainer

    return train_on_pairs(cfg, "dpo", DPOTrainer, f"beta {cfg.training.beta}, loss {cfg.training.loss_type}")


def _config():
    from trl import DPOConfig  # TrainingArguments plus beta, loss_type, max_length

    return DPOConfig


STAGE = Stage(
    "dpo", "preference tuning (DPO on TRL) with LoRA or full weights",
    "Preference tuning (DPO) on TRL's DPOTrainer, with LoRA (default; the reference model is the same network with "
    "the adapter disabled, no second copy), full weights, or continuing an SFT adapter (--peft_path). Data: "
    "prompt/chosen/rejected, sharegpt conversations/chosen/rejected, or DPO-zh-en-emoji (question, answer_zh chosen, "
    "answer_en rejected), rendered with the chat template. --beta, --loss_type (sigmoid, ipo, hinge, and the others "
    "TRL offers; several, space-separated, are combined with --loss_weights), --max_length (prompt+reply, truncated by TRL) and "
    "--max_prompt_length (longer pairs are dropped and counted, as the seed's DPO scripts did).",
    data="preferences", config=_config, run=run_dpo, defaults={"learning_rate": 5e-6, "max_length": 1024},
    grouped=False,
    metrics=("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"),
    settings=("beta", "loss_type", "loss_weights", "learning_rate"))
