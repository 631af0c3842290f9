"""The training stages, by name: the one list the CLI's verbs, their `--help`, a recipe's stage keys,
`adept run`'s chaining and the report's training section are all drawn from.

Each method lives in its own file beside this one (pt.py, sft.py, dpo.py, orpo.py, kto.py) and
declares a `STAGE` there: its help, the kind of data it trains on, its config class (transformers'
TrainingArguments or TRL's own config, as TRL keeps dpo_config.py beside dpo_trainer.py), its
defaults and its run function. Adding a method is that file and its name in NAMES.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

# The registered stages, in the order `adept run` chains them (each continues the adapter before it).
NAMES = ("pt", "sft", "dpo", "orpo", "kto")

# What each kind of training data is, for help texts and errors (readers: adeptlm/data/).
DATA_KINDS = {"corpus": "a directory of .txt files or a .jsonl/.json file with 'text'",
              "instructions": "a directory of .json/.jsonl instruction files, or one file",
              "preferences": "a directory of .json/.jsonl preference files (prompt/chosen/rejected, ...), or one file",
              "feedback": "a directory of .json/.jsonl files of prompt/completion/label records (or preference "
                          "pairs, each split into a desirable and an undesirable record), or one file"}


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str                      # one line in `adept --help`
    description: str                  # `adept NAME --help`
    data: str                         # a key of DATA_KINDS: what --dataset_dir holds
    config: Callable[[], type]        # the TrainingArguments class its flags come from (imported when called)
    run: Callable                     # run(TrainConfig) -> metrics dict
    defaults: dict = field(default_factory=dict)   # over args.STAGE_DEFAULTS
    kl_to_base: bool = False          # takes --kl_to_base (a term on adeptlm's own cross-entropy Trainer)
    grouped: bool = True              # records carry input_ids, so batches can group them by length
    metrics: tuple[str, ...] = ()     # what its trainer logs beyond the loss, kept in run.json (last values, history)
    settings: tuple[str, ...] = ()    # its own config options, recorded in run.json's metrics.method


def get(name: str) -> Stage:
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"{__package__}.{name}").STAGE


def stages() -> list[Stage]:
    return [get(n) for n in NAMES]


def chained(recipe: dict) -> list[str]:
    """The training stages a recipe asks for, in chaining order."""
    return [n for n in NAMES if recipe.get(n)]
