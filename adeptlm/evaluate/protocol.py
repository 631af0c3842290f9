"""The exam protocol, defined once: every setting of an exam run, its default and its help.

`adept eval ceval|cmmlu|mmlu|exam` flags, a recipe's `eval:` keys (an unknown key is refused), the
settings that make two runs "the same evaluation" (eval-config.json, checked before finished
subjects are reused) and the protocol written into run.json are all read from ExamConfig's fields.
A field's metadata says where it appears:

- flags: the command-line spellings (the first is the field's own, the rest the seed's aliases);
- recipe: whether a recipe's `eval:` may set it (paths, the model and the backend are the recipe's own);
- same: whether a rerun with another value is another evaluation (see exam._check_same_evaluation).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ..data.layouts import NAMES
from ..errors import AdeptError

# letter and cloze are the two formulations of a multiple-choice question that OLMES (Gu et al.
# 2024) scores side by side: MCF (the options listed, the answer letter scored) and CF (the question
# alone, each option's text scored as its continuation); both runs the two and names the better one.
FORMULATIONS = ("letter", "cloze")
MODES = ("letter", "cloze", "both", "generate")
PROMPT_STYLES = ("auto", *NAMES)


def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "y", "t"):
        return True
    if v in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _opt(default, help: str, *, flags: tuple[str, ...] = (), kind=None, choices=None, recipe: bool = True,
         same: bool = False):
    return field(default=default, metadata={"help": help, "flags": flags, "kind": kind, "choices": choices,
                                            "recipe": recipe, "same": same})


@dataclass
class ExamConfig:
    model: str | None = _opt(None, "a known model name, HF directory, LoRA adapter directory (applied unmerged) "
                             "or .gguf", flags=("--model_path", "--model", "-m"), recipe=False, same=True)
    data_dir: Path = _opt(None, "the exam folder: dev/ val/ test/ of CSV files (C-Eval, CMMLU or MMLU layout)",
                          flags=("--data_dir", "--data", "--input_dir", "-d"), kind=Path, recipe=False, same=True)
    output_dir: Path = _opt(None, "where results go (default runs/eval-<cmd>)", flags=("--output_dir", "--save_dir",
                            "-s"), kind=Path, recipe=False)
    split: str | None = _opt(None, "evaluate this split (default: val, or test with --do_test; CMMLU: test)",
                             choices=("dev", "val", "test"), same=True)
    few_shot: bool = _opt(True, "use dev rows as demonstrations (True/False)", kind=bool, same=True)
    ntrain: int = _opt(5, "number of demonstrations; -1 = every dev row", flags=("--ntrain", "-k"), kind=int,
                       same=True)
    with_prompt: bool = _opt(False, "wrap prompts in the model's chat template, demonstrations as turns "
                             "(True/False)", kind=bool, same=True)
    mode: str = _opt("letter", "the formulation: letter = options listed, the answer letter's logit (the seed's "
                     "C-Eval protocol, OLMES's MCF); cloze = the question alone, each option's text scored as "
                     "its continuation (OLMES's CF; acc and acc_norm per character); both = letter and cloze side "
                     "by side, the better named; generate = greedy answer + the seed's extraction",
                     flags=("--mode", "--formulation"), choices=MODES, same=True)
    template: str | None = _opt(None, "chat template with --with_prompt True (default: the model's)", same=True)
    circular: bool = _opt(False, "ask each question four times with its options rotated (OpenCompass's "
                          "CircularEval); correct only if correct every time; letter and generate only (True/False)", kind=bool, same=True)
    subjects: list[str] | None = _opt(None, "comma-separated subjects (default: all)", kind=list)
    limit: int | None = _opt(None, "at most N questions per subject", kind=int, same=True)
    batch_size: int = _opt(8, "at most N prompts per forward pass (batches are cut to keep padding low)", kind=int)
    n_times: int = _opt(1, "repeat the evaluation; mean and std are reported", kind=int)
    shot_seed: int | None = _opt(None, "draw demonstrations at random with this seed (+ take number); default: "
                                 "the first ntrain", kind=int, same=True)
    do_save_csv: bool = _opt(False, "write <subject>_<split>.csv per subject", kind=bool)
    do_test: bool = _opt(False, "evaluate the test split instead of val", kind=bool)
    dtype: str = _opt("float32", "weights' dtype for the transformers backend",
                      choices=("float32", "bfloat16", "float16", "auto"), same=True)
    max_new_tokens: int = _opt(32, "generate mode: tokens to generate", kind=int, same=True)
    backend: str = _opt("auto", "auto: llama.cpp for a .gguf file when llama-cpp-python is installed, else "
                        "transformers; vllm: a merged HF directory on vLLM (every mode; needs the environment "
                        "`make vllm` builds). In a recipe: the before and after evaluations' backend",
                        choices=("auto", "transformers", "llama.cpp", "vllm"), same=True)
    tokenizer: str | None = _opt(None, "llama.cpp backend: model whose HF tokenizer builds the prompts (default: "
                                 "the GGUF's own)", recipe=False)
    prompt_style: str = _opt("auto", "header and answer cue: auto = the exam's own layout; mmlu = English "
                             "('Answer:') for an English exam kept in C-Eval's file layout", choices=PROMPT_STYLES,
                             same=True)
    exclude: Path | None = _opt(None, "leave these items out of the score: a JSON file with a list of {subject, "
                                "split, id} under 'items', as `adept data contamination --output` writes",
                                kind=Path, recipe=False, same=True)
    # set by the command, not a flag: "ceval"/"cmmlu"/"mmlu" when `adept eval <layout>` names one
    expect_layout: str | None = field(default=None, metadata={"recipe": False, "same": False, "flags": None})


def _flag_fields():
    return [f for f in fields(ExamConfig) if f.metadata.get("flags") is not None]


def _parse(f, value):
    kind = f.metadata.get("kind")
    if value is None:
        return None
    if kind is bool:
        return str2bool(value)
    if kind is int:
        return int(value)
    if kind is Path:
        return Path(value)
    if kind is list:
        return [x for x in (value.split(",") if isinstance(value, str) else map(str, value)) if x] or None
    return str(value)


def add_exam_arguments(p: argparse.ArgumentParser) -> None:
    """The exam flags of `adept eval ceval|cmmlu|mmlu|exam`, from ExamConfig's fields."""
    for f in _flag_fields():
        spellings = f.metadata["flags"] or (f"--{f.name}",)
        kind = f.metadata.get("kind")
        parse = {bool: str2bool, int: int}.get(kind, str)
        p.add_argument(*spellings, dest=f.name, default=None if f.default is MISSING else f.default, type=parse,
                       choices=f.metadata.get("choices"), help=f.metadata["help"])


def config_from_args(args: argparse.Namespace, **over) -> ExamConfig:
    values = {f.name: _parse(f, getattr(args, f.name)) for f in _flag_fields() if hasattr(args, f.name)}
    values.update(over)
    return ExamConfig(**values)


RECIPE_KEYS = tuple(f.name for f in fields(ExamConfig) if f.metadata.get("recipe"))
SAME_EVALUATION_KEYS = tuple(f.name for f in fields(ExamConfig) if f.metadata.get("same"))


def config_from_recipe(ev: dict, where: str, extra_keys: tuple[str, ...] = (), **over) -> ExamConfig:
    """A recipe's `eval:` mapping as an ExamConfig; `where` names the recipe file in errors. Keys in
    extra_keys belong to the recipe's other evaluations (perplexity) and are skipped here."""
    check_recipe_eval(ev, where, extra_keys)
    by_name = {f.name: f for f in fields(ExamConfig)}
    values = {k: _parse(by_name[k], v) for k, v in ev.items() if k in by_name}
    values.setdefault("do_save_csv", True)
    values.update(over)
    return ExamConfig(**values)


def check_recipe_eval(ev, where: str, extra_keys: tuple[str, ...] = ()) -> None:
    """Refuse an unknown or ill-typed key under a recipe's `eval:` with one line naming it."""
    if not isinstance(ev, dict):
        raise AdeptError(f"{where}: eval: expected a mapping of exam settings, got {type(ev).__name__}")
    by_name = {f.name: f for f in fields(ExamConfig)}
    for key, value in ev.items():
        if key in extra_keys:
            continue
        if key not in RECIPE_KEYS:
            raise AdeptError(f"{where}: eval.{key}: not an exam setting (one of {', '.join(RECIPE_KEYS + extra_keys)})")
        f = by_name[key]
        try:
            parsed = _parse(f, value)
        except (ValueError, argparse.ArgumentTypeError):
            raise AdeptError(f"{where}: eval.{key}: {value!r} is not a valid {f.metadata['kind'].__name__}") from None
        choices = f.metadata.get("choices")
        if choices and parsed not in choices:
            raise AdeptError(f"{where}: eval.{key}: {value!r} is not one of {', '.join(choices)}")
