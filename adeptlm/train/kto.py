"""`adept kto`: Kahneman-Tversky optimisation (Ethayarajh et al. 2024) on TRL's KTOTrainer.

KTO learns from unpaired feedback: a prompt, one completion and whether it is desirable, the thumbs
up or down a deployed assistant collects, with no need for a chosen and a rejected reply to the same
prompt (data/feedback.py; a preference file is split into one desirable and one undesirable record).
Like DPO it is anchored to a reference policy: with LoRA, TRL (1.16) keeps a frozen copy of the
starting adapter as adapter "ref" (a fresh adapter's copy is the base), dropped before saving. Its
loss compares each completion's reward with a KL estimate taken from mismatched prompt/completion
pairs of the same batch, so a batch needs at least two records.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data.feedback import read_feedback
from ..data.tokenize import fingerprint
from ..errors import AdeptError
from ..templates import get_template
from .args import TrainConfig
from .common import load_model_for_training, log, train_and_save
from .dpo import preference_files
from .stages import DATA_KINDS, Stage


def to_records(feedback) -> list[dict]:
    """TRL's conversational unpaired-preference records."""
    return [{"prompt": r.prompt, "completion": [{"role": "assistant", "content": r.completion}],
             "label": r.desirable} for r in feedback]


def run_kto(cfg: TrainConfig) -> dict:
    from datasets import Dataset
    from trl import KTOTrainer

    if not cfg.data.dataset_dir:
        raise AdeptError(f"adept kto needs --dataset_dir: {DATA_KINDS['feedback']}")
    if cfg.training.per_device_train_batch_size < 2 and cfg.training.loss_type != "apo_zero_unpaired":
        raise AdeptError(f"--per_device_train_batch_size {cfg.training.per_device_train_batch_size}: KTO estimates "
                         "its KL term from the other records of a batch, so it needs at least 2")
    files = preference_files(Path(cfg.data.dataset_dir))
    shapes, records = {}, []
    for f in files:  # read and validate everything before loading the model
        shape, got = read_feedback(f)
        shapes[f.name] = shape
        records.extend(got)
    good = sum(r.desirable for r in records)
    if good in (0, len(records)):
        raise AdeptError(f"{cfg.data.dataset_dir}: all {len(records)} records are "
                         f"{'desirable' if good else 'undesirable'}: KTO needs both kinds")
    val = read_feedback(Path(cfg.data.validation_file))[1] if cfg.data.validation_file else None
    if cfg.data.max_train_samples:
        records = records[: cfg.data.max_train_samples]
    # TRL's KTO reads batches in order (each record's KL completion is its neighbour's): shuffle once,
    # seeded, so a batch is not all one file or all one label
    random.Random(cfg.training.seed).shuffle(records)
    model, tokenizer = load_model_for_training(cfg)
    template = get_template(tokenizer, cfg.model.template)
    tokenizer.chat_template = template.jinja  # TRL renders with it; saved with the adapter for inference
    log(f"{len(records)} feedback records ({good} desirable) from {len(files)} file(s) "
        f"({', '.join(sorted(set(shapes.values())))}), template {template.name}, beta {cfg.training.beta}, "
        f"weights {cfg.training.desirable_weight:g}/{cfg.training.undesirable_weight:g}")
    data_info = {"files": [str(f) for f in files], "shapes": shapes, "records": len(records), "desirable": good,
                 "template": template.name,
                 "fingerprint": fingerprint(files, tokenizer, {"stage": "kto", "template": template.jinja})}
    return train_and_save(cfg, "kto", model, tokenizer, Dataset.from_list(to_records(records)),
                          Dataset.from_list(to_records(val)) if val else None, data_info, trainer_class=KTOTrainer)


def _config():
    from trl import KTOConfig  # TrainingArguments plus beta, desirable/undesirable weights, max_length

    return KTOConfig


STAGE = Stage(
    "kto", "preference tuning from unpaired feedback (KTO on TRL)",
    "Kahneman-Tversky optimisation (KTO) on TRL's KTOTrainer: learns from unpaired feedback, one completion per "
    "record marked desirable or not (prompt/completion/label, label true or false), so thumbs-up/down logs train "
    "without pairing; a preference file is split into one desirable and one undesirable record per pair. With LoRA "
    "the reference is the starting adapter (a fresh adapter: the base). --beta, --desirable_weight and "
    "--undesirable_weight (keep desirable x weight over undesirable x weight between 1 and 4/3, as the paper "
    "advises), --max_length (prompt+completion); a batch needs at least 2 records.",
    data="feedback", config=_config, run=run_kto, defaults={"learning_rate": 5e-6, "max_length": 1024},
    grouped=False,
    metrics=("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"),
    settings=("beta", "loss_type", "desirable_weight", "undesirable_weight", "learning_rate"))
