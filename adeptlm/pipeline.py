"""`adept run RECIPE.yaml`: the whole loop, stage by stage, resumable.

baseline evaluation → (replay: the base model's answers to general questions) → continued
pre-training → SFT (mixed with the replay) → (DPO, ORPO or KTO) → merge → evaluation → GGUF export →
export check → report. Each stage writes runs/<name>/<stage>/ and, last, its run.json; a rerun
skips every stage whose run.json exists and resumes an interrupted training stage from its newest
checkpoint. Training stages run as child `adept` processes (a clean Trainer/accelerate state
each, and the same command a user would type); the others run in this process.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .atomic import write_text
from .config import read_yaml_mapping
from .errors import AdeptError
from .lock import hold
from .runrecord import read_run, write_run
from .train.stages import NAMES as TRAIN_NAMES, chained, get as get_stage


def iter_records(path: Path):
    from .data.files import iter_json_records

    return (rec for _, rec in iter_json_records(path))


DEMO_DIR = Path(__file__).parent / "demo"
# Bundled recipes, chosen by name (`adept run NAME`); the first is what `adept run` runs.
BUNDLED = {"quenta-demo": (DEMO_DIR / "recipe.yaml",
                           "English: SmolLM2-135M-Instruct learns the fictional Quenta Isles (the default)"),
           "xilan-zh": (DEMO_DIR / "recipe_zh.yaml",
                        "Chinese: gemma3-270m learns the fictional 汐澜群岛, C-Eval protocol, GGUF for llama.cpp")}
DEMO_RECIPE = BUNDLED["quenta-demo"][0]
# data: {builtin: true, subject: NAME}: the module whose write_subject(out, seed) generates it
SUBJECTS = {"quenta": "adeptlm.demo.subject", "xilan": "adeptlm.demo.subject_zh"}


def recipe_path(spec: str | None) -> Path:
    """A bundled recipe's name, or a recipe file."""
    if not spec:
        return DEMO_RECIPE
    if spec in BUNDLED:
        return BUNDLED[spec][0]
    path = Path(spec)
    if not path.exists() and path.suffix not in (".yaml", ".yml"):
        raise AdeptError(f"unknown recipe '{spec}': not a bundled recipe ({', '.join(BUNDLED)}; see "
                         "`adept run --list`) or a YAML file")
    return path


def load_recipe(path: Path | None, quick: bool) -> dict:
    path = path or DEMO_RECIPE
    recipe = read_yaml_mapping(path, "recipe")
    if "name" not in recipe:
        raise AdeptError(f"{path}: a recipe is a mapping with at least 'name'")
    unknown = set(recipe) - {"name", "model", "data", "eval", "replay", "mix", *TRAIN_NAMES, "select", "export",
                             "quick", "output_dir", "exams", "retention", "contamination"}
    if unknown:
        raise AdeptError(f"{path}: unknown recipe key(s) {', '.join(sorted(unknown))}")
    subject = (recipe.get("data") or {}).get("subject", "quenta")
    if subject not in SUBJECTS:
        raise AdeptError(f"{path}: data.subject {subject!r} is not a bundled subject ({', '.join(SUBJECTS)})")
    exams = recipe.get("exams") or {}
    if not isinstance(exams, dict):
        raise AdeptError(f"{path}: exams: a mapping of name: exam folder (C-Eval, CMMLU or MMLU layout)")
    for name, folder in exams.items():
        if name in ("exam", "general_exam"):
            raise AdeptError(f"{path}: exams.{name}: the name is taken by the recipe's own exams")
        if not Path(str(folder)).is_dir():
            raise AdeptError(f"{path}: exams.{name}: {folder!r} is not an exam folder (C-Eval, CMMLU or MMLU layout)")
    if quick:
        recipe = _merge(recipe, recipe.get("quick") or {})
        recipe["name"] = recipe["name"] + "-quick"
    recipe["recipe_file"] = str(path)
    check_recipe(recipe, path)
    return recipe


# Flags of the training stages that the run sets itself (its model, data, output and chaining).
RUN_SET_FLAGS = ("model_name_or_path", "dataset_dir", "data_cache_dir", "output_dir", "peft_path")
# data: keys of a recipe with its own files, and the kind each must hold (adeptlm.data.detect)
DATA_KINDS = {"corpus": "corpus", "instructions": "instructions", "preferences": "preferences", "feedback": "feedback",
              "exam": "exam", "general_exam": "exam", "select_exam": "exam", "heldout": "corpus"}
# of those, what a recipe on the bundled subject (data: {builtin: true}) may add
BUILTIN_OWN = ("preferences", "feedback")


# retention: general text and prompts for the probes, and the forgetting budget the report checks
RETENTION_KEYS = {"data": "general text (.txt directory or .jsonl with 'text')", "prompts": "a JSON list of strings",
                  "prompts_limit": "at most this many prompts (default 24; 0 = all)",
                  "max_kl": "budget: the largest mean KL(base || tuned) on the general text",
                  "min_same_answers": "budget: the smallest share of greedy answers left as the base's (0-1)"}


# replay: the base model's answers to general questions, for SFT (adeptlm/replay.py)
REPLAY_KEYS = {"prompts": "a JSON list of general questions (default: the bundled subject's own)",
               "volume": "take this many of the bundled subject's large prompt set",
               "limit": "at most this many prompts", "max_new_tokens": "answer length (default 48)",
               "distill": "W: distil the answers in SFT (the base's whole distribution at every position, weight W) "
                          "instead of training on their words"}


def check_replay(cfg, path: Path) -> None:
    if not isinstance(cfg, dict):
        raise AdeptError(f"{path}: replay: expected a mapping ({', '.join(REPLAY_KEYS)})")
    for key, value in cfg.items():
        if key not in REPLAY_KEYS:
            raise AdeptError(f"{path}: replay.{key}: not a replay setting (one of {', '.join(REPLAY_KEYS)})")
        if key == "prompts":
            if not Path(str(value)).is_file():
                raise AdeptError(f"{path}: replay.prompts: {value} is not a file")
        elif key == "distill":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise AdeptError(f"{path}: replay.distill: {value!r} is not a weight >= 0")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AdeptError(f"{path}: replay.{key}: {value!r} is not a whole number >= 0")


def check_retention(cfg, path: Path) -> None:
    from .data.detect import load_data
    from .evaluate.retention import read_prompts

    if not isinstance(cfg, dict):
        raise AdeptError(f"{path}: retention: expected a mapping ({', '.join(RETENTION_KEYS)})")
    for key, value in cfg.items():
        if key not in RETENTION_KEYS:
            raise AdeptError(f"{path}: retention.{key}: not a retention setting (one of {', '.join(RETENTION_KEYS)})")
        if key in ("max_kl", "min_same_answers", "prompts_limit"):
            try:
                float(value)
            except (TypeError, ValueError):
                raise AdeptError(f"{path}: retention.{key}: {value!r} is not a number") from None
    if cfg.get("data"):
        load_data(Path(str(cfg["data"])), "corpus")
    if cfg.get("prompts"):
        read_prompts(Path(str(cfg["prompts"])))


# contamination: the overlap check before training, and whether contaminated items are scored at all
CONTAMINATION_KEYS = {"ngram": "tokens in a shared run that marks an item contaminated (default 13)",
                      "drop": "leave contaminated items out of every exam's score, before and after (default false)"}


def check_contamination(cfg, path: Path) -> None:
    import argparse

    from .evaluate.protocol import str2bool

    if not isinstance(cfg, dict):
        raise AdeptError(f"{path}: contamination: expected a mapping ({', '.join(CONTAMINATION_KEYS)})")
    for key, value in cfg.items():
        if key not in CONTAMINATION_KEYS:
            raise AdeptError(f"{path}: contamination.{key}: not a contamination setting (one of "
                             f"{', '.join(CONTAMINATION_KEYS)})")
    from .data.contamination import NGRAM

    try:
        str2bool(cfg.get("drop", False))
        if int(cfg.get("ngram", NGRAM)) < 1:
            raise ValueError
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise AdeptError(f"{path}: contamination: drop must be true/false and ngram a whole number >= 1") from None


# mix: a general instruction set mixed into SFT against forgetting
MIX_KEYS = {"data": "an instruction file (alpaca, messages or sharegpt records)",
            "ratio": "records drawn from it per subject instruction record (0.5 = one for every two)",
            "seed": "the draw's seed (default 0)"}


def check_mix(cfg, path: Path) -> None:
    from .data.instructions import read_instructions

    if not isinstance(cfg, dict) or not cfg.get("data"):
        raise AdeptError(f"{path}: mix: expected a mapping with data: (and ratio:, seed:)")
    for key in cfg:
        if key not in MIX_KEYS:
            raise AdeptError(f"{path}: mix.{key}: not a mix setting (one of {', '.join(MIX_KEYS)})")
    try:
        if float(cfg.get("ratio", 1.0)) <= 0 or int(cfg.get("seed", 0)) < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise AdeptError(f"{path}: mix: ratio must be a number > 0 and seed a whole number >= 0") from None
    target = Path(str(cfg["data"]))
    if not target.is_file():
        raise AdeptError(f"{path}: mix.data: {target} is not a file")
    read_instructions(target)   # a bad record stops here: file, line and field


def check_recipe(recipe: dict, path: Path) -> None:
    """Everything a run will need, checked before its first stage: the eval: settings, every stage's
    flags and every data file the recipe names. An error is one line naming the recipe file and key,
    or the data file, line and field."""
    from .data.detect import load_data
    from .evaluate.protocol import check_recipe_eval
    from .train.args import check_stage_flags

    check_recipe_eval(recipe.get("eval") or {}, str(path), EVAL_EXTRA_KEYS)
    also_modes(recipe.get("eval") or {}, str(path))
    check_retention(recipe.get("retention") or {}, path)
    if recipe.get("replay") is not None:
        check_replay(recipe["replay"], path)
    check_contamination(recipe.get("contamination") or {}, path)
    if recipe.get("mix") is not None:
        check_mix(recipe["mix"], path)
    if "select" in recipe:
        from .select import check_select

        check_select(recipe["select"] or {}, str(path))
    for stage in chained(recipe):
        check_stage_flags(stage, recipe[stage], str(path), RUN_SET_FLAGS)
    for name, folder in (recipe.get("exams") or {}).items():
        load_data(Path(str(folder)), "exam")
    data = recipe.get("data") or {"builtin": True}
    if not isinstance(data, dict):
        raise AdeptError(f"{path}: data: expected a mapping (builtin: true, or corpus: / instructions: / ... paths)")
    # the bundled subject has no preference data: a recipe on it may bring its own for dpo, orpo or kto
    own = [k for k in (BUILTIN_OWN if data.get("builtin") else DATA_KINDS) if data.get(k)]
    for key in own:
        target = Path(str(data[key]))
        if not target.exists():
            raise AdeptError(f"{path}: data.{key}: {target} does not exist")
        load_data(target, DATA_KINDS[key])  # a bad record stops here: file, line and field
    if data.get("builtin"):
        return
    if "select" in recipe and not data.get("select_exam"):
        raise AdeptError(f"{path}: select: needs data.select_exam, a selection exam whose questions the reported "
                         "exam (data.exam) does not ask: the choice of model must not see what it is reported on")
    unknown = set(data) - set(DATA_KINDS) - {"builtin"}
    if unknown:
        raise AdeptError(f"{path}: data.{sorted(unknown)[0]}: not a data key (one of {', '.join(DATA_KINDS)})")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# eval: keys that are not exam settings: the held-out perplexity's window, and the formulations scored
# beside the headline one (`also: both` on a generate recipe: the report then shows letter and cloze too)
EVAL_EXTRA_KEYS = ("ppl_max_length", "also")


def also_modes(ev: dict, where: str) -> list[str]:
    """The formulations the recipe scores beside its headline mode (eval.also: letter, cloze, both or
    generate, or a list of them), without the ones the headline mode already scores."""
    raw = ev.get("also") or []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise AdeptError(f"{where}: eval.also: expected letter, cloze, both or generate, or a list of them")
    modes = []
    for item in items:
        if item not in ("letter", "cloze", "both", "generate"):
            raise AdeptError(f"{where}: eval.also: {item!r} is not one of letter, cloze, both, generate")
        modes += ["letter", "cloze"] if item == "both" else [item]
    mode = ev.get("mode", "letter")
    covered = {"letter", "cloze"} if mode == "both" else {mode}
    return [m for m in dict.fromkeys(modes) if m not in covered]


def exam_config(recipe: dict, **kw):
    """The recipe's one exam protocol (eval: in the YAML) as an ExamConfig."""
    from .evaluate.protocol import config_from_recipe

    return config_from_recipe(recipe.get("eval") or {}, recipe.get("recipe_file", "recipe"), EVAL_EXTRA_KEYS, **kw)


def log(msg: str) -> None:
    print(f"adept run: {msg}", flush=True)


class Run:
    def __init__(self, recipe: dict, root: Path):
        self.recipe, self.root = recipe, root
        self.model = recipe.get("model") or "smollm2-135m-instruct"

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def done(self, stage: str) -> bool:
        return read_run(self.dir(stage)) is not None

    # ---------------------------------------------------------------- data
    def data_paths(self) -> dict:
        data = self.recipe.get("data") or {"builtin": True}
        if data.get("builtin"):
            d = self.dir("data")
            return {"corpus": d / "corpus", "instructions": d / "instructions", "exam": d / "exam",
                    "general_exam": d / "general_exam", "select_exam": d / "select_exam", "heldout": d / "heldout",
                    **{k: Path(str(data[k])) if data.get(k) else None for k in BUILTIN_OWN}}
        return {k: Path(v) if v else None for k, v in data.items()}

    def stage_data(self) -> None:
        data = self.recipe.get("data") or {"builtin": True}
        if not data.get("builtin"):
            write_run(self.dir("data"), "data", data, {})
            return
        import importlib

        subject = data.get("subject", "quenta")
        write_subject = importlib.import_module(SUBJECTS[subject]).write_subject
        seed = int(data.get("seed", 7))
        summary = write_subject(self.dir("data"), seed)
        write_run(self.dir("data"), "data", {"builtin": True, "subject": subject, "seed": seed}, summary)

    def exam_folders(self) -> dict[str, Path]:
        """Every exam the run scores: its own two, then the recipe's `exams:`."""
        paths = self.data_paths()
        exams = {k: paths[k] for k in ("exam", "general_exam") if paths.get(k)}
        exams.update({k: Path(str(v)) for k, v in (self.recipe.get("exams") or {}).items()})
        return exams

    # ---------------------------------------------------------------- contamination
    def stage_contamination(self) -> None:
        """Before any training: each exam against the training data (adeptlm/data/contamination.py). The
        contaminated items of each exam go to contamination/items-<exam>.json, which the exam stages leave out
        of the score when the recipe says `contamination: {drop: true}`."""
        from dataclasses import asdict

        from .data.contamination import NGRAM, find_overlaps, overlaps_json

        ngram = int((self.recipe.get("contamination") or {}).get("ngram", NGRAM))
        paths = self.data_paths()
        training = [paths[k] for k in ("corpus", "instructions", "preferences", "feedback")
                    if paths.get(k) and paths[k].exists()]
        metrics = {}
        for key, folder in self.exam_folders().items():
            found, checked = find_overlaps(folder, training, ngram)
            metrics[key] = {"checked": checked, "contaminated": len(found), "items": [asdict(o) for o in found]}
            write_text(self.dir("contamination") / f"items-{key}.json", overlaps_json(found, checked, ngram))
            log(f"contamination: {key}: {len(found)} of {checked} items share a {ngram}-token run with the "
                f"training data{' (left out of the scores)' if found and self.drop_contaminated else ''}")
        write_run(self.dir("contamination"), "contamination",
                  {"ngram": ngram, "drop": self.drop_contaminated, "training": [str(t) for t in training]}, metrics)

    @property
    def drop_contaminated(self) -> bool:
        from .evaluate.protocol import str2bool

        return str2bool((self.recipe.get("contamination") or {}).get("drop", False))

    def exclusions(self, key: str) -> Path | None:
        """The exam's contaminated items, when the recipe drops them from the score."""
        path = self.dir("contamination") / f"items-{key}.json"
        return path if self.drop_contaminated and path.is_file() else None

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, stage: str, model: str) -> None:
        from .evaluate.exam import run_exam
        from .evaluate.perplexity import run_ppl

        ev = self.recipe.get("eval") or {}
        paths = self.data_paths()
        metrics: dict = {}
        for key, folder in self.exam_folders().items():
            summary = run_exam(exam_config(self.recipe, model=model, data_dir=folder, output_dir=self.dir(stage) / key,
                                           exclude=self.exclusions(key)))
            metrics[key] = summary["All"]["score"]
            if "formulations" in summary:
                metrics[f"{key}_formulations"] = summary["formulations"]
            for mode in also_modes(ev, self.recipe.get("recipe_file", "recipe")):
                # scored beside the headline, in the exam's folder: <stage>/<exam>/<mode>
                other = run_exam(exam_config(self.recipe, model=model, data_dir=folder, mode=mode,
                                             output_dir=self.dir(stage) / key / mode, exclude=self.exclusions(key)))
                metrics.setdefault(f"{key}_also", {})[mode] = other["All"]["score"]
        form = self.reading("exam")
        if form:  # both: every exam read before and after in the base model's better formulation
            metrics["read_formulation"] = form
            for key in self.exam_folders():
                if f"{key}_formulations" in metrics:
                    metrics[key] = metrics[f"{key}_formulations"][form]["score"]
        if paths.get("heldout"):
            r = run_ppl(model, paths["heldout"], max_length=int(ev.get("ppl_max_length", 512)), stride=256)
            metrics["heldout_perplexity"] = r["perplexity"]
        write_run(self.dir(stage), stage, {"model": model, "eval": ev}, metrics)

    def reading(self, key: str) -> str | None:
        """The formulation the exams scored in both are read in, before and after: OLMES's rule on the
        base model's answers pooled over the run's exams (evaluate.exam.model_formulation)."""
        from .evaluate.exam import model_formulation

        files = [self.dir("baseline") / k / "summary.json" for k in self.exam_folders()]
        return model_formulation([json.loads(f.read_text(encoding="utf-8")) for f in files if f.is_file()])

    # ---------------------------------------------------------------- retention
    def retention_inputs(self) -> tuple[Path | None, list[str]]:
        """General text and prompts for the retention probes: the recipe's own (retention: data, prompts),
        else made from the general exam (each question with its correct option as text; the questions
        asked open-ended), which no training stage sees."""
        from .evaluate.retention import read_prompts

        cfg = self.recipe.get("retention") or {}
        data = Path(str(cfg["data"])) if cfg.get("data") else None
        prompts = read_prompts(Path(str(cfg["prompts"]))) if cfg.get("prompts") else []
        general = self.data_paths().get("general_exam")
        if (data is None or not prompts) and general and general.is_dir():
            from .data.exams import read_exam

            from .data.exams import LETTERS

            qs = [q for s in read_exam(general).subjects.values() for split in s.values() for q in split
                  if q.answer in LETTERS]
            if data is None:
                data = self.root / "retention-data"
                text = "\n\n".join(f"{q.question} {q.choices[LETTERS.index(q.answer)]}" for q in qs)
                from .atomic import write_text

                write_text(data / "general.txt", text + "\n")
            if not prompts:
                prompts = [q.question for q in qs]
        limit = cfg.get("prompts_limit", 24)
        return data, prompts[: int(limit)] if limit else prompts

    def stage_retention(self) -> None:
        from .evaluate.retention import run_retention

        data, prompts = self.retention_inputs()
        if data is None and not prompts:
            write_run(self.dir("retention"), "retention", {}, {"skipped": "no general text or prompts"})
            return
        run_retention(self.model, str(self.dir("merge")), data, prompts, output=self.dir("retention"))

    # ---------------------------------------------------------------- training
    def _train(self, stage: str, argv: list[str]) -> None:
        out = self.dir(stage)
        cmd = [sys.executable, "-m", "adeptlm", stage, *argv, "--output_dir", str(out)]
        log(f"{stage}: {' '.join(cmd[3:])}")
        rc = subprocess.call(cmd)
        if rc != 0:
            raise AdeptError(f"stage {stage} failed (exit {rc}); rerun `adept run` to resume it")

    def _flags(self, stage: str) -> list[str]:
        from .train.args import flag_value

        argv = []
        for k, v in (self.recipe.get(stage) or {}).items():
            argv += [f"--{k}", flag_value(v)]
        return argv

    def stage_train(self, stage: str) -> None:
        """A training stage of the registry on the recipe's data of its kind, continuing the adapter of
        the stage before it (the first starts from the model)."""
        kind = get_stage(stage).data
        argv = ["--model_name_or_path", self.model, "--dataset_dir", str(self.train_data(stage, kind))]
        if kind in ("corpus", "instructions"):   # tokenized once, kept beside the run
            argv += ["--data_cache_dir", str(self.root / "cache" / stage)]
        prev = self.last_adapter(stage)
        if prev:
            argv += ["--peft_path", str(prev)]
        weight = self.replay_distill_weight()
        if kind == "instructions" and weight:  # the replay's records held to the base's distribution
            argv += ["--distill_file", str(self.dir("replay") / "general_replay.json"), "--distill_weight", str(weight)]
        self._train(stage, argv + self._flags(stage))

    def replay_distill_weight(self) -> float | None:
        """replay: {distill: W}: the base model's answers are distilled in SFT (its whole next-token
        distribution at every position, weight W; adeptlm/train/kl.py) instead of trained on as words."""
        cfg = self.recipe.get("replay") or {}
        return float(cfg["distill"]) if cfg.get("distill") else None

    def train_data(self, stage: str, kind: str) -> Path:
        if kind == "instructions":
            return self.sft_data()
        paths = self.data_paths()
        found = paths.get(kind) or (paths.get("preferences") if kind == "feedback" else None)
        if not found:
            need = "data.feedback or data.preferences" if kind == "feedback" else f"data.{kind}"
            raise AdeptError(f"the recipe has a {stage} stage but no {need}")
        return found

    def last_adapter(self, before: str) -> Path | None:
        order = chained(self.recipe)
        prior = order[: order.index(before)] if before in order else order
        return self.dir(prior[-1]) if prior else None

    # ---------------------------------------------------------------- replay
    def stage_replay(self) -> None:
        from .replay import write_replay

        cfg = self.recipe.get("replay") or {}
        if cfg.get("prompts"):
            from .evaluate.retention import read_prompts

            prompts = read_prompts(Path(cfg["prompts"]))
        else:  # the bundled subject's own general questions, in its language
            import importlib

            subject = (self.recipe.get("data") or {}).get("subject", "quenta")
            prompts = importlib.import_module(SUBJECTS[subject]).replay_prompts(cfg.get("volume"))
        if cfg.get("limit"):
            prompts = prompts[: int(cfg["limit"])]
        out = self.dir("replay") / "general_replay.json"
        summary = write_replay(self.model, prompts, out, int(cfg.get("max_new_tokens", 48)))
        write_run(self.dir("replay"), "replay", cfg, summary, file=str(out))

    def sft_data(self) -> Path:
        """The SFT dataset: the instructions, plus the replay answers when the recipe has a replay stage,
        plus records drawn from a general instruction set when it has `mix:`."""
        inst = self.data_paths()["instructions"]
        replayed = bool(self.recipe.get("replay")) and not self.replay_distill_weight()
        if not replayed and not self.recipe.get("mix"):
            return inst
        out = self.root / "sft-data"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        files = [inst] if inst.is_file() else sorted(p for p in inst.iterdir() if p.suffix in (".json", ".jsonl"))
        extra = [self.dir("replay") / "general_replay.json"] if replayed else []
        for f in files + extra:
            shutil.copyfile(f, out / f.name)
        if self.recipe.get("mix"):
            self._mix_into(out, sum(1 for f in files for _ in iter_records(f)))
        return out

    def _mix_into(self, out: Path, subject_records: int) -> None:
        """Draw round(ratio x subject records) records of the mix set (without replacement, seeded) into
        out/mix-<name>.jsonl; their count and source go in the log and the SFT stage's data record."""
        import random

        cfg = self.recipe["mix"]
        source = Path(str(cfg["data"]))
        records = list(iter_records(source))
        want = round(float(cfg.get("ratio", 1.0)) * subject_records)
        if want > len(records):
            raise AdeptError(f"mix: ratio {cfg.get('ratio')} asks for {want} records of {source}, which has "
                             f"{len(records)}")
        drawn = random.Random(int(cfg.get("seed", 0))).sample(records, want)
        write_text(out / f"mix-{source.stem}.jsonl",
                   "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in drawn))
        log(f"sft: {want} records of {source} mixed in ({cfg.get('ratio', 1.0)} per subject record)")

    # ---------------------------------------------------------------- selection
    def stage_select(self) -> None:
        """The trained adapter at several scales and its checkpoints, scored on the selection exam and
        the retention probes; one chosen inside the recipe's forgetting budget (adeptlm/select.py)."""
        from dataclasses import replace

        from .select import ALPHAS, Probes, parse_alphas, read_budget, run_select

        cfg = self.recipe.get("select") or {}
        adapter = self.last_adapter("select")
        if adapter is None:
            raise AdeptError(f"the recipe trains nothing: add a training stage ({', '.join(TRAIN_NAMES)})")
        # the candidates are adapters at several scales, which only the transformers backend applies
        ev = exam_config(self.recipe, model=self.model, output_dir=self.dir("select"), backend="transformers")
        if ev.mode == "both":  # the formulation the reported exams are read in
            ev = replace(ev, mode=self.reading("exam") or "letter")
        text, prompts = self.retention_inputs()
        limit = cfg.get("prompts_limit", 24)
        general = self.data_paths().get("general_exam")
        # α = 0 is the base model: the baseline stage's general score (in the formulation read, as ev's) is its
        # own, unless that score left contaminated items out and the selection's exam does not
        baseline = (read_run(self.dir("baseline")) or {}).get("metrics", {})
        base_general = baseline.get("general_exam") if general and not self.drop_contaminated else None
        probes = Probes(self.data_paths()["select_exam"], ev, general, text,
                        prompts[: int(limit)] if limit else prompts, int(cfg.get("kl_tokens", 2048)),
                        int(cfg.get("max_new_tokens", 32)), base_general)
        run_select(self.model, adapter, probes, self.dir("select"), parse_alphas(cfg.get("alphas", ALPHAS)),
                   int(cfg.get("checkpoints", 2)), read_budget(cfg, self.recipe.get("recipe_file", "recipe")))

    # ---------------------------------------------------------------- merge, export
    def stage_merge(self) -> None:
        from .merge import merge

        adapter, alpha = self.last_adapter("merge"), 1.0
        if adapter is None:
            raise AdeptError(f"the recipe trains nothing: add a training stage ({', '.join(TRAIN_NAMES)})")
        chosen = read_run(self.dir("select")) if "select" in self.recipe else None
        if chosen:  # the selection stage's choice: a checkpoint or the adapter, at its scale
            adapter, alpha = Path(chosen["metrics"]["adapter"]), float(chosen["metrics"]["alpha"])
        # merge writes run.json inside its atomic output directory
        merge(self.model, [str(adapter)], self.dir("merge"), overwrite=True, alpha=alpha)

    def stage_export(self) -> None:
        from .export.gguf import export_gguf

        outtype = (self.recipe.get("export") or {}).get("outtype", "q8_0")
        path = self.dir("export") / f"{self.recipe['name']}-{outtype}.gguf"
        r = export_gguf(str(self.dir("merge")), path, outtype)
        write_run(self.dir("export"), "export", {"outtype": outtype, "model": str(self.dir("merge"))},
                  {"bytes": r.bytes, "tensors": r.tensors, "pre_tokenizer": r.pre}, gguf=str(path))

    def stage_check(self) -> None:
        from dataclasses import asdict

        from .export.check import check_gguf

        gguf = read_run(self.dir("export"))["gguf"]
        ev = self.recipe.get("eval") or {}
        report = check_gguf(str(self.dir("merge")), gguf, self.dir("check"), None,
                            n_tokens=int((self.recipe.get("export") or {}).get("check_tokens", 32)))
        exam = self._exam_gguf(gguf, ev)
        write_run(self.dir("check"), "check", {"gguf": gguf}, {**asdict(report), "exam": exam})

    def _exam_gguf(self, gguf: str, ev: dict) -> dict:
        """The subject exam through llama.cpp, same protocol as the HF evaluation after training."""
        from .evaluate.exam import run_exam

        cfg = exam_config(self.recipe, model=gguf, data_dir=self.data_paths()["exam"], output_dir=self.dir("check") / "exam",
                          backend="llama.cpp", tokenizer=str(self.dir("merge")))
        if cfg.mode == "both":  # the formulation the HF model's score is read in
            cfg.mode = self.reading("exam") or "letter"
        return {"gguf_accuracy": run_exam(cfg)["All"]["score"],
                "hf_accuracy": read_run(self.dir("after"))["metrics"].get("exam")}

    def stage_report(self) -> None:
        from .evaluate.report import write_report

        paths = write_report(self.root, self.recipe)
        write_run(self.dir("report"), "report", {}, {"files": [str(p) for p in paths]})


def run_recipe(recipe_path: Path | None = None, quick: bool = False, output_root: Path | None = None) -> Path:
    recipe = load_recipe(recipe_path, quick)
    root = Path(output_root or recipe.get("output_dir") or "runs") / recipe["name"]
    with hold(root, f"adept run {recipe['name']}"):    # before anything in it is written
        return _run_stages(recipe, root)


def _run_stages(recipe: dict, root: Path) -> Path:
    (root / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    run = Run(recipe, root)
    steps = [("data", run.stage_data), ("contamination", run.stage_contamination),
             ("baseline", lambda: run._evaluate("baseline", run.model))]
    if recipe.get("replay"):
        steps.append(("replay", run.stage_replay))
    for s in chained(recipe):
        steps.append((s, lambda s=s: run.stage_train(s)))
    if "select" in recipe:
        steps.append(("select", run.stage_select))
    steps += [("merge", run.stage_merge), ("after", lambda: run._evaluate("after", str(run.dir("merge")))),
              ("retention", run.stage_retention),
              ("export", run.stage_export), ("check", run.stage_check), ("report", run.stage_report)]
    t_all = time.time()
    for i, (name, fn) in enumerate(steps, 1):
        if run.done(name):
            log(f"[{i}/{len(steps)}] {name}: finished earlier, skipped")
            continue
        log(f"[{i}/{len(steps)}] {name} ...")
        t0 = time.time()
        fn()
        log(f"[{i}/{len(steps)}] {name} done in {time.time() - t0:.0f} s")
    log(f"all stages done in {time.time() - t_all:.0f} s: {root / 'report.html'}")
    return root
