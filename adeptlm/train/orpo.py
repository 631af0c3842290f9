"""`adept orpo`: odds-ratio preference optimisation (Hong et al. 2024) on TRL's ORPOTrainer.

ORPO trains from the same preference pairs as DPO but with no reference model: its loss is the
chosen reply's cross-entropy (SFT) plus beta (the paper's lambda) times the log-sigmoid of the log
odds ratio between chosen and rejected, so one pass both teaches the replies and pushes the
rejected ones down. TRL 1.16 keeps it under trl.experimental.
"""

from __future__ import annotations

from .args import TrainConfig
from .dpo import train_on_pairs
from .stages import Stage


def run_orpo(cfg: TrainConfig) -> dict:
    from trl.experimental.orpo import ORPOTrainer

    return train_on_pairs(cfg, "orpo", ORPOTrainer, f"beta (lambda) {cfg.training.beta}, no reference model")


def _config():
    from trl.experimental.orpo import ORPOConfig  # TrainingArguments plus beta, max_length

    return ORPOConfig


STAGE = Stage(
    "orpo", "preference tuning without a reference model (ORPO on TRL)",
    "Odds-ratio preference optimisation (ORPO) on TRL's ORPOTrainer: the chosen reply's SFT loss plus --beta "
    "(the paper's lambda) times the log-odds-ratio term that pushes the rejected reply down, with no reference "
    "model, so it can start from the base model where DPO would need an SFT stage first. Data as adept dpo "
    "(prompt/chosen/rejected, sharegpt, DPO-zh-en-emoji); --max_length (prompt+reply) and --max_prompt_length "
    "(longer pairs are dropped and counted). TRL 1.16 keeps ORPO under trl.experimental: its API may change "
    "between TRL releases.",
    data="preferences", config=_config, run=run_orpo, defaults={"learning_rate": 8e-6, "max_length": 1024},
    grouped=False,
    metrics=("rewards/accuracies", "rewards/margins", "nll_loss", "log_odds_ratio"),
    settings=("beta", "learning_rate"))
