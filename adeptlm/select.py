"""`adept select`: choose the trade-off between gain and forgetting on held-out data.

Candidates are the trained LoRA adapter at several scales α (W = W0 + α·ΔW, WiSE-FT's weight
interpolation, Wortsman et al. 2022: α = 0 is the base, α = 1 the adapter) and the saved
checkpoints of the training stage. Each is scored on

- a selection split of the subject exam, which the reported exam never uses (its gain over α = 0,
  the base model, is the candidate's gain);
- the general exam (its change from the base);
- the retention probes: mean KL(base ‖ candidate) and top-token agreement on general text, and the
  share of greedy answers to general prompts left as the base model's;

and the candidate with the largest selection gain inside the forgetting budget is chosen. Nothing
is reloaded to score a candidate: the base model is loaded once with every adapter on it (PEFT), a
checkpoint is an adapter made active. The exams run on the candidate's weights W0 + α·ΔW written
into the base layers in memory (MergedWeights: the base's own restored exactly after each); the
probes run the adapter unmerged, α being PEFT's `rescale_adapter_scale` (which multiplies each LoRA
layer's scaling), and the base model's side of each probe is the same model with its adapters
disabled. `adept merge --alpha` then writes the chosen candidate.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .errors import AdeptError

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# select: keys of a recipe (and `adept select` flags), each with its help
BUDGET_KEYS = {"max_kl": "the largest mean KL(base || candidate) on the general text, nats per token",
               "min_same_answers": "the smallest share (0-1) of general prompts answered greedily as the base did",
               "max_general_drop": "the largest drop on the general exam, in points"}
SELECT_KEYS = {"alphas": "the scales α of the trained adapter to try (default 0, 0.25, 0.5, 0.75, 1)",
               "checkpoints": "how many of the training stage's saved checkpoints to try, evenly spread "
                              "(default 2; 0 = none)",
               "kl_tokens": "score KL on at most this many tokens of the general text (default 2048)",
               "prompts_limit": "at most this many general prompts for the greedy probe (default 24)",
               "max_new_tokens": "greedy answer length of the prompt probe (default 32)",
               **BUDGET_KEYS}


@dataclass
class Candidate:
    name: str                  # "alpha=0.50", "checkpoint-120"
    adapter: str               # the adapter directory
    alpha: float = 1.0
    step: int | None = None    # a checkpoint's training step; None for the final adapter

    @property
    def is_base(self) -> bool:
        """α = 0 of the final adapter: the base model exactly, the reference of every gain."""
        return self.alpha == 0.0 and self.step is None


@dataclass
class Budget:
    """A forgetting budget; a bound left at None is not applied."""
    max_kl: float | None = None
    min_same_answers: float | None = None
    max_general_drop: float | None = None

    def failures(self, row: dict) -> list[str]:
        """The bounds this scored candidate breaks, each as 'name (value vs bound)'."""
        out = []
        if self.max_kl is not None and row.get("mean_kl") is not None and row["mean_kl"] > self.max_kl:
            out.append(f"max_kl ({row['mean_kl']:.3f} > {self.max_kl:g})")
        if (self.min_same_answers is not None and row.get("same_share") is not None
                and row["same_share"] < self.min_same_answers):
            out.append(f"min_same_answers ({row['same_share']:.2f} < {self.min_same_answers:g})")
        if (self.max_general_drop is not None and row.get("general_change") is not None
                and -row["general_change"] > self.max_general_drop):
            out.append(f"max_general_drop ({-row['general_change']:.1f} > {self.max_general_drop:g} points)")
        return out

    def active(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def read_budget(cfg: dict, where: str) -> Budget:
    values = {}
    for key in BUDGET_KEYS:
        if cfg.get(key) is not None:
            try:
                values[key] = float(cfg[key])
            except (TypeError, ValueError):
                raise AdeptError(f"{where}: select.{key}: {cfg[key]!r} is not a number") from None
    return Budget(**values)


def check_select(cfg, where: str) -> None:
    """Refuse an unknown or ill-typed select: key with one line naming it."""
    if not isinstance(cfg, dict):
        raise AdeptError(f"{where}: select: expected a mapping ({', '.join(SELECT_KEYS)})")
    for key in cfg:
        if key not in SELECT_KEYS:
            raise AdeptError(f"{where}: select.{key}: not a selection setting (one of {', '.join(SELECT_KEYS)})")
    read_budget(cfg, where)
    parse_alphas(cfg.get("alphas", ALPHAS), where)
    for key in ("checkpoints", "kl_tokens", "prompts_limit", "max_new_tokens"):
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 0):
            raise AdeptError(f"{where}: select.{key}: {cfg[key]!r} is not a whole number >= 0")


def parse_alphas(value, where: str = "--alphas") -> list[float]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        alphas = sorted({float(a) for a in items})
    except (TypeError, ValueError):
        raise AdeptError(f"{where}: alphas: {value!r} is not a list of numbers") from None
    if not alphas or any(a < 0 or a > 1 for a in alphas):
        raise AdeptError(f"{where}: alphas: each scale must lie in [0, 1] (0 is the base, 1 the adapter)")
    return alphas


def adapter_saves_modules(adapter: Path) -> bool:
    """Whether the adapter carries whole modules (modules_to_save, a resized embedding): scaling the
    LoRA pairs does not interpolate those, so only α = 1 is that adapter."""
    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    return bool(cfg.get("modules_to_save"))


def checkpoints_of(stage_dir: Path, take: int) -> list[tuple[int, Path]]:
    """`take` of the stage's saved checkpoints, evenly spread over training, the final step left out
    (it is the adapter itself)."""
    found = sorted((int(m.group(1)), p) for p in stage_dir.glob("checkpoint-*")
                   if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "adapter_config.json").is_file())
    if not found or take <= 0:
        return []
    found = found[:-1]
    if len(found) <= take:
        return found
    picks = sorted({round((i + 1) * len(found) / (take + 1)) - 1 for i in range(take)})
    return [found[i] for i in picks]


def candidates(adapter: Path, alphas: Sequence[float], checkpoints: int = 2) -> tuple[list[Candidate], list[str]]:
    """The candidates and notes on any left out. α = 0 (the base) is always tried: it is the
    reference every gain and every change is measured from."""
    notes = []
    alphas = sorted(set(alphas) | {0.0})
    if adapter_saves_modules(adapter):
        kept = [a for a in alphas if a in (0.0, 1.0)]
        if kept != alphas:
            notes.append(f"{adapter} saves whole modules (modules_to_save): scales between 0 and 1 would not "
                         "interpolate them, so only α = 0 and 1 are tried")
        alphas = kept
    out = [Candidate(f"alpha={a:.2f}", str(adapter), a) for a in alphas]
    out += [Candidate(p.name, str(p), 1.0, step) for step, p in checkpoints_of(adapter, checkpoints)]
    return out, notes


def choose(rows: list[dict], budget: Budget) -> tuple[int, list[str]]:
    """The index of the chosen candidate and, when none fits the budget, the bounds the chosen one
    breaks. Inside the budget: the largest selection gain (ties: the least KL, then the smaller α).
    Outside it: the least forgetting (the least KL; without a text probe, the most base answers kept,
    then the smallest general drop)."""
    def forgetting(i):
        r = rows[i]
        return (r.get("mean_kl") if r.get("mean_kl") is not None else 0.0,
                -(r.get("same_share") if r.get("same_share") is not None else 1.0),
                -(r.get("general_change") if r.get("general_change") is not None else 0.0), r["alpha"])

    fits = [i for i, r in enumerate(rows) if not budget.failures(r)]
    if fits:
        return max(fits, key=lambda i: (rows[i]["gain"], tuple(-x for x in forgetting(i)))), []
    best = min(range(len(rows)), key=forgetting)
    return best, budget.failures(rows[best])


# --------------------------------------------------------------------------- scoring


def _texts_within(data: Path, tokenizer, max_tokens: int) -> list[str]:
    """The general text's documents in order, up to about max_tokens tokens (the last one cut)."""
    from .data.corpus import read_corpus

    out, used = [], 0
    for doc in read_corpus(data):
        ids = tokenizer(doc.text)["input_ids"]
        if used + len(ids) > max_tokens:
            if max_tokens - used > 1:
                out.append(tokenizer.decode(ids[: max_tokens - used]))
            break
        out.append(doc.text)
        used += len(ids)
    return out


@dataclass
class Probes:
    """What every candidate is scored on, and the protocol of the exams."""
    select_exam: Path
    exam_config: object                       # an ExamConfig: mode, prompt style, template ...
    general_exam: Path | None = None
    text: Path | None = None
    prompts: list[str] = field(default_factory=list)
    kl_tokens: int = 2048
    max_new_tokens: int = 32
    base_general: float | None = None        # the base model's general exam score, when already measured


class _BaseSide:
    """The PEFT model called with its adapters disabled: the base model's logits."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kw):
        with self.model.disable_adapter():
            return self.model(**kw)


def kept_answers(model, pad_id: int, prompts: Sequence[list[int]], answers: Sequence[list[int]],
                 max_new_tokens: int, stop_ids: Sequence[int], batch_size: int = 4) -> list[bool]:
    """Whether greedy decoding of the model would write each base answer again, token for token,
    checked in one teacher-forced pass per batch instead of max_new_tokens decoding steps: the answer
    is kept iff the model's argmax at each of its positions is the base's token and, where the base
    stopped before max_new_tokens, its argmax after the last one is a stop token."""
    import torch

    kept = []
    for b in range(0, len(prompts), batch_size):
        rows = [list(p) + list(a) for p, a in zip(prompts[b:b + batch_size], answers[b:b + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        for r, (p, a) in enumerate(zip(prompts[b:b + batch_size], answers[b:b + batch_size])):
            start = len(p) - 1
            ok = pred[r, start:start + len(a)].tolist() == list(a)
            if ok and len(a) < max_new_tokens:
                ok = int(pred[r, start + len(a)]) in stop_ids
            kept.append(ok)
    return kept


def load_candidates(base_spec: str, cands: list[Candidate]):
    """(PEFT model, tokenizer, adapter names): the base model loaded once with every candidate's
    adapter on it, each under its own name."""
    from peft import PeftModel

    from .models import load_model

    base, tok = load_model(base_spec)
    names: dict[str, str] = {}                 # adapter directory -> PEFT adapter name
    model = None
    for c in cands:
        if c.adapter in names:
            continue
        names[c.adapter] = f"c{len(names)}"
        if model is None:
            model = PeftModel.from_pretrained(base, c.adapter, adapter_name=names[c.adapter])
        else:
            model.load_adapter(c.adapter, adapter_name=names[c.adapter])
    model.eval()
    return model, tok, names


@contextmanager
def activated(model, names: dict[str, str], c: Candidate):
    """The model as this candidate, inside the block: its adapter active, scaled by its α."""
    from peft.helpers import rescale_adapter_scale

    model.set_adapter(names[c.adapter])
    with rescale_adapter_scale(model, c.alpha):
        yield model


class MergedWeights:
    """Candidates' weights written into the base layers, for the exams: W0 + α·ΔW in place of each
    LoRA layer's base weight, the adapters bypassed, so that generation and scoring run at the base
    model's speed (an unmerged r64 adapter on every projection runs three matrix products where the
    merged weight runs one). The base's own weights are copied once and put back exactly after each
    candidate. Plain LoRA on linear layers only (PEFT's public get_delta_weight, B·A·scaling, peft
    0.21); an adapter with whole modules or DoRA is scored unmerged (`applies` is False)."""

    def __init__(self, model):
        self.model, self.saved = model, {}

    def _layers(self, name: str) -> list:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]

    def applies(self, name: str, adapter: Path) -> bool:
        from peft.tuners.lora import Linear

        layers = self._layers(name)
        return (bool(layers) and not adapter_saves_modules(adapter)
                and all(isinstance(m, Linear) and not m.use_dora.get(name) for m in layers))

    @contextmanager
    def candidate(self, name: str, alpha: float):
        import torch

        layers = self._layers(name)
        try:
            with torch.no_grad():
                for m in layers:
                    w = m.get_base_layer().weight
                    if id(m) not in self.saved:
                        self.saved[id(m)] = w.detach().clone()
                    w.add_(m.get_delta_weight(name), alpha=alpha)
            with self.model.disable_adapter():
                yield self.model
        finally:
            with torch.no_grad():
                for m in layers:
                    m.get_base_layer().weight.copy_(self.saved[id(m)])


def score_candidates(base_spec: str, cands: list[Candidate], probes: Probes, output_dir: Path,
                     progress=print) -> list[dict]:
    """Score every candidate (see the module's docstring); each exam's outputs go under
    output_dir/<candidate>/."""
    import torch

    from .backends import HFBackend
    from .evaluate.exam import run_exam
    from .evaluate.retention import text_probe

    model, tok, names = load_candidates(base_spec, cands)
    backend = HFBackend(model, tok, batch_size=probes.exam_config.batch_size, model_id=str(base_spec))
    texts = _texts_within(probes.text, tok, probes.kl_tokens) if probes.text else []
    prompt_ids = [backend.chat_prompt([{"role": "user", "content": p}]) for p in probes.prompts]

    base_answers = []
    if prompt_ids:      # the base model's greedy answers, once; each candidate is checked against them
        with torch.inference_mode(), model.disable_adapter():
            base_answers = backend.generate(prompt_ids, probes.max_new_tokens, backend.stop_ids)

    def exam(folder: Path, out: Path) -> float | None:
        cfg = replace(probes.exam_config, data_dir=folder, output_dir=out, model=str(base_spec))
        return run_exam(cfg, backend)["All"]["score"]

    merged = MergedWeights(model)
    rows = []
    for c in cands:
        t0 = time.time()
        out = output_dir / c.name
        # the exams on the candidate's merged weights where it can be merged (faster, and what merge writes)
        as_merged = not c.is_base and merged.applies(names[c.adapter], Path(c.adapter))
        with (merged.candidate(names[c.adapter], c.alpha) if as_merged else activated(model, names, c)), \
                torch.inference_mode():
            row = {"name": c.name, "adapter": c.adapter, "alpha": c.alpha, "step": c.step,
                   "select_exam": exam(probes.select_exam, out / "select_exam")}
            if probes.general_exam:
                row["general_exam"] = (probes.base_general if c.is_base and probes.base_general is not None
                                       else exam(probes.general_exam, out / "general_exam"))
        with activated(model, names, c), torch.inference_mode():
            if texts and c.is_base:     # nothing to measure: KL 0, every top token the base's own
                row.update(mean_kl=0.0, same_top_token=1.0)
            elif texts:
                t = text_probe(_BaseSide(model), model, tok, texts)
                row.update(mean_kl=t["mean_kl"], perplexity=t["perplexity"], base_perplexity=t["base_perplexity"],
                           same_top_token=t["same_top_token"], kl_tokens=t["tokens"])
            if prompt_ids:
                kept = ([True] * len(prompt_ids) if c.is_base else
                        kept_answers(model, backend.pad_id, prompt_ids, base_answers, probes.max_new_tokens,
                                     backend.stop_ids))
                row.update(same_answers=sum(kept), prompts=len(kept), same_share=sum(kept) / len(kept))
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        progress(f"select: {c.name}: selection exam {row['select_exam']:.1f}%"
                 + (f", general {row['general_exam']:.1f}%" if row.get("general_exam") is not None else "")
                 + (f", KL {row['mean_kl']:.3f}" if "mean_kl" in row else "")
                 + (f", {row['same_answers']}/{row['prompts']} answers kept" if "same_answers" in row else "")
                 + f" ({row['seconds']:.0f} s)")
    measured = next((r["base_perplexity"] for r in rows if "base_perplexity" in r), None)
    for r in rows:
        if "mean_kl" in r and "perplexity" not in r and measured is not None:
            r.update(perplexity=measured, base_perplexity=measured)
    ref = rows[next(i for i, c in enumerate(cands) if c.is_base)]
    for r in rows:
        r["gain"] = r["select_exam"] - ref["select_exam"]
        if r.get("general_exam") is not None:
            r["general_change"] = r["general_exam"] - ref["general_exam"]
    return rows


def run_select(base_spec: str, adapter: Path, probes: Probes, output_dir: Path, alphas: Sequence[float] = ALPHAS,
               checkpoints: int = 2, budget: Budget | None = None) -> dict:
    """Score the candidates, choose one, write output_dir/run.json (every candidate's row and the
    choice); returns the metrics written."""
    from .runrecord import write_run

    budget = budget or Budget()
    t0 = time.time()
    cands, notes = candidates(Path(adapter), alphas, checkpoints)
    for n in notes:
        print(f"select: {n}", flush=True)
    rows = score_candidates(base_spec, cands, probes, Path(output_dir))
    chosen, failed = choose(rows, budget)
    pick = rows[chosen]
    if failed:
        print(f"select: no candidate fits the forgetting budget ({', '.join(f'{k} {v:g}' for k, v in budget.active().items())}); "
              f"chose the one that forgets least, {pick['name']}, which breaks {', '.join(failed)}", flush=True)
    else:
        print(f"select: chose {pick['name']} (selection gain {pick['gain']:+.1f} points) of {len(rows)} candidates",
              flush=True)
    metrics = {"candidates": rows, "chosen": pick["name"], "adapter": pick["adapter"], "alpha": pick["alpha"],
               "budget": budget.active(), "failed_budget": failed, "notes": notes,
               "formulation": probes.exam_config.mode, "seconds": round(time.time() - t0, 1)}
    write_run(Path(output_dir), "select",
              {"base": str(base_spec), "adapter": str(adapter), "alphas": list(alphas), "checkpoints": checkpoints,
               "select_exam": str(probes.select_exam), "general_exam": str(probes.general_exam),
               "text": str(probes.text), "prompts": len(probes.prompts), "kl_tokens": probes.kl_tokens}, metrics)
    return metrics
