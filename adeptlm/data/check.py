"""`adept data check`: what a path holds, how many records, token lengths, warnings, one example."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from . import layouts
from .detect import Loaded, load_data

KIND_NAMES = {
    "corpus": "pre-training corpus",
    "instructions": "instructions",
    "preferences": "preference pairs",
    "feedback": "unpaired feedback (KTO)",
    "exam": "multiple-choice exam",
}
SHAPE_NAMES = {
    "txt": ".txt documents", "json": "JSON 'text' records", "alpaca": "alpaca", "messages": "messages",
    "sharegpt": "sharegpt", "pcr": "prompt/chosen/rejected", "feedback": "prompt/completion/label", "emoji": "DPO-zh-en-emoji (question/answer_zh/answer_en)",
    **{x.name: f"{x.title} layout" + ("" if x.header else " (no header)") for x in layouts.LAYOUTS},
}


@dataclass
class CheckReport:
    path: Path
    loaded: Loaded
    count: int
    lines: list[str] = field(default_factory=list)  # statistics, already formatted
    warnings: list[str] = field(default_factory=list)
    example: str = ""

    def format(self) -> str:
        shape = " + ".join(SHAPE_NAMES.get(s, s) for s in self.loaded.shape.split("+"))
        unit = {"corpus": "documents", "instructions": "records", "preferences": "pairs", "feedback": "records",
                "exam": "questions"}
        out = [f"path:     {self.path}",
               f"kind:     {KIND_NAMES[self.loaded.kind]} ({shape})",
               f"count:    {self.count} {unit[self.loaded.kind]} in {len(self.loaded.files)} "
               f"{'file' if len(self.loaded.files) == 1 else 'files'}"]
        out += self.lines
        out.append("warnings: " + ("none" if not self.warnings else ""))
        out += [f"  - {w}" for w in self.warnings]
        if self.example:
            out += ["example:", self.example]
        return "\n".join(out)


def _stats(lengths: list[int]) -> str:
    if not lengths:
        return "n/a"
    s = sorted(lengths)
    p = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return f"min {s[0]}, mean {mean(s):.1f}, p50 {p(0.5)}, p95 {p(0.95)}, max {s[-1]}, total {sum(s)}"


def _dupes(keys: list[str], sources: list[str], what: str) -> list[str]:
    seen: dict[str, str] = {}
    dups = []
    for k, src in zip(keys, sources):
        if k in seen:
            dups.append((src, seen[k]))
        else:
            seen[k] = src
    if not dups:
        return []
    return [f"{len(dups)} duplicate {what} (first: {dups[0][0]} repeats {dups[0][1]})"]


def check_data(path: Path | str, model: str | None = None, template: str | None = None,
               max_length: int = 1024, show_example: bool = True) -> CheckReport:
    path = Path(path)
    loaded = load_data(path)
    if loaded.kind == "exam":
        return _check_exam(path, loaded)
    from ..models import load_tokenizer
    from ..templates import encode_conversation, encode_prompt, get_template, show_mask

    tok = load_tokenizer(model)
    recs = loaded.records
    report = CheckReport(path, loaded, len(recs))
    report.lines.append(f"tokenizer: {model or 'smollm2-135m-instruct'} (vocabulary {len(tok)})")
    too_long: list[str] = []
    if loaded.kind == "corpus":
        lengths = [len(ids) for ids in tok([d.text for d in recs], add_special_tokens=False)["input_ids"]]
        report.lines.append(f"tokens:   {_stats(lengths)} per document")
        report.lines.append(f"chars:    {sum(len(d.text) for d in recs)}")
        report.warnings += _dupes([d.text for d in recs], [d.source for d in recs], "documents")
        if show_example:
            d = recs[0]
            report.example = f"  ({d.source}, {lengths[0]} tokens)\n  " + d.text[:400].replace("\n", "\n  ") + \
                ("..." if len(d.text) > 400 else "")
        return report
    tmpl = get_template(tok, template)
    report.lines.append(f"template: {tmpl.name} (end of turn {tmpl.eot!r})")
    if loaded.kind == "instructions":
        encs = [encode_conversation(tok, tmpl, c.messages) for c in recs]
        lengths = [len(e.input_ids) for e in encs]
        report.lines.append(f"tokens:   {_stats(lengths)} per record")
        report.lines.append(f"trained:  {_stats([e.trained for e in encs])} per record (assistant tokens)")
        too_long = [c.source for c, n in zip(recs, lengths) if n > max_length]
        empty = [c.source for c in recs if "empty output" in c.warnings]
        if empty:
            report.warnings.append(f"{len(empty)} records with an empty output: they teach the model to say "
                                   f"nothing (first: {empty[0]})")
        report.warnings += _dupes([json.dumps(c.messages, ensure_ascii=False) for c in recs],
                                  [c.source for c in recs], "records")
        if show_example:
            report.example = f"  ({recs[0].source}; trained tokens between [[ and ]])\n" + \
                show_mask(tok, encs[0])
    elif loaded.kind == "feedback":
        lengths = [len(encode_prompt(tok, tmpl, r.prompt)) +
                   len(tok(r.completion + tmpl.eot, add_special_tokens=False)["input_ids"]) for r in recs]
        good = sum(r.desirable for r in recs)
        report.lines.append(f"labels:   {good} desirable, {len(recs) - good} undesirable")
        report.lines.append(f"tokens:   {_stats(lengths)} with the prompt")
        too_long = [r.source for r, n in zip(recs, lengths) if n > max_length]
        if not good or good == len(recs):
            report.warnings.append("every record has the same label: KTO needs desirable and undesirable ones")
        report.warnings += _dupes([json.dumps([r.prompt, r.completion, r.desirable], ensure_ascii=False)
                                   for r in recs], [r.source for r in recs], "records")
        if show_example:
            r = recs[0]
            report.example = f"  ({r.source})\n  prompt:     {r.prompt[-1]['content'][:300]!r}\n" \
                             f"  completion: {r.completion[:300]!r}\n  desirable:  {str(r.desirable).lower()}"
    else:  # preferences
        lens_c, lens_r = [], []
        for pair in recs:
            prompt = len(encode_prompt(tok, tmpl, pair.prompt))
            lens_c.append(prompt + len(tok(pair.chosen + tmpl.eot, add_special_tokens=False)["input_ids"]))
            lens_r.append(prompt + len(tok(pair.rejected + tmpl.eot, add_special_tokens=False)["input_ids"]))
        report.lines.append(f"chosen:   {_stats(lens_c)} tokens with the prompt")
        report.lines.append(f"rejected: {_stats(lens_r)} tokens with the prompt")
        too_long = [p.source for p, a, b in zip(recs, lens_c, lens_r) if max(a, b) > max_length]
        same = [p.source for p in recs if p.chosen.strip() == p.rejected.strip()]
        if same:
            report.warnings.append(f"{len(same)} pairs whose chosen and rejected replies are the same: they "
                                   f"teach nothing (first: {same[0]})")
        report.warnings += _dupes([json.dumps([p.prompt, p.chosen, p.rejected], ensure_ascii=False) for p in recs],
                                  [p.source for p in recs], "pairs")
        if show_example:
            p = recs[0]
            prompt = tok.decode(encode_prompt(tok, tmpl, p.prompt), skip_special_tokens=False)
            if len(prompt) > 800:
                prompt = prompt[:400] + f"\n  [... {len(prompt) - 800} characters ...]\n" + prompt[-400:]
            report.example = (f"  ({p.source})\n{prompt}\n  chosen:   {p.chosen[:300]!r}\n"
                              f"  rejected: {p.rejected[:300]!r}")
    if too_long:
        report.warnings.append(f"{len(too_long)} records longer than {max_length} tokens would be truncated "
                               f"(first: {too_long[0]}); raise --max_length or shorten them")
    return report


def _check_exam(path: Path, loaded: Loaded) -> CheckReport:
    exam = loaded.exam
    assert exam is not None
    report = CheckReport(path, loaded, exam.count())
    report.lines.append(f"subjects: {len(exam.subjects)} ({', '.join(exam.subjects)})")
    for split in exam.splits():
        n = sum(1 for s in exam.subjects.values() if split in s)
        answers = Counter(q.answer for s in exam.subjects.values() for q in s.get(split, []))
        gold = "no answers (submission only)" if set(answers) == {None} else \
            "answers " + " ".join(f"{k}:{answers.get(k, 0)}" for k in layouts.letters(
                max(len(q.choices) for s in exam.subjects.values() for q in s.get(split, []))))
        report.lines.append(f"{split + ':':9} {exam.count(split)} questions in {n} subjects; {gold}")
    for subject, splits in exam.subjects.items():
        if "dev" not in splits:
            report.warnings.append(f"{subject} has no dev split: few-shot prompts need one")
        for split, qs in splits.items():
            report.warnings += _dupes([q.question + "\x00" + "\x00".join(q.choices) for q in qs],
                                      [q.source for q in qs], f"questions in {subject}/{split}")
    first = next(iter(next(iter(exam.subjects.values())).values()))[0]
    choices = "\n".join(f"  {k}. {c}" for k, c in zip(layouts.LETTERS, first.choices))
    report.example = f"  ({first.source})\n  {first.question}\n{choices}\n  answer: {first.answer or '(none)'}"
    return report
