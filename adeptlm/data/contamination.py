"""Exam contamination: exam items whose text also occurs, as a long n-gram, in the training data.

The check follows the n-gram overlap used for decontamination in the GPT-3 paper and in
lm-evaluation-harness: text is lower-cased and NFKC-normalised, split into tokens (a word of
letters/digits, or a single CJK character, so Chinese and English are measured alike), and an
item is contaminated when any run of N consecutive tokens of its question plus its correct option
is also a run in some training record (default N = 13). An item shorter than N tokens is checked
whole: contaminated when its whole token sequence occurs in training text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from .detect import load_data
from .exams import LETTERS

NGRAM = 13
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def _ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


@dataclass
class Overlap:
    subject: str
    split: str
    id: str
    question: str
    match: str       # the shared run of tokens, joined
    source: str      # the first training record holding it ("file:line")


def training_texts(path: Path) -> list[tuple[str, str]]:
    """(text, source) of every record of a corpus, instruction or preference path."""
    loaded = load_data(path)
    out = []
    for rec in loaded.records:
        if loaded.kind == "corpus":
            out.append((rec.text, rec.source))
        elif loaded.kind == "instructions":
            out.append(("\n".join(m["content"] for m in rec.messages), rec.source))
        elif loaded.kind == "preferences":
            out.append(("\n".join([*(m["content"] for m in rec.prompt), rec.chosen, rec.rejected]), rec.source))
        elif loaded.kind == "feedback":
            out.append(("\n".join([*(m["content"] for m in rec.prompt), rec.completion]), rec.source))
    return out


def find_overlaps(exam_dir: Path, training: list[Path], n: int = NGRAM) -> tuple[list[Overlap], int]:
    """The exam's contaminated items, and how many items were checked."""
    loaded = load_data(exam_dir, "exam")
    index: dict[tuple[str, ...], str] = {}
    joined: list[tuple[str, str]] = []  # token streams for short items, with their source
    for path in training:
        for text, source in training_texts(path):
            toks = tokens(text)
            for g in _ngrams(toks, n):
                index.setdefault(g, source)
            joined.append((" " + " ".join(toks) + " ", source))
    found, checked = [], 0
    for subject, splits in loaded.exam.subjects.items():
        for split, questions in splits.items():
            for q in questions:
                checked += 1
                gold = q.choices[LETTERS.index(q.answer)] if q.answer in LETTERS else ""
                toks = tokens(q.question + " " + gold)
                hit = None
                if len(toks) >= n:
                    hit = next(((g, index[g]) for g in _ngrams(toks, n) if g in index), None)
                elif toks:
                    needle = " " + " ".join(toks) + " "
                    hit = next(((tuple(toks), src) for hay, src in joined if needle in hay), None)
                if hit:
                    found.append(Overlap(subject, split, q.id, q.question, " ".join(hit[0]), hit[1]))
    return found, checked


def overlaps_json(found: list[Overlap], checked: int, n: int) -> str:
    """The contaminated items as `adept data contamination --output` writes them and `adept eval
    --exclude` reads them."""
    return json.dumps({"ngram": n, "checked": checked, "items": [asdict(o) for o in found]}, ensure_ascii=False,
                      indent=2)
