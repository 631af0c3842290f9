"""Multiple-choice exams in the C-Eval, CMMLU and MMLU layouts (data/layouts.py), detected from the files.

- C-Eval: split folders dev/ val/ test/, files `<subject>_<split>.csv`, header
  `id,question,A,B,C,D,answer[,explanation]` (test has no answer column).
- CMMLU:  split folders dev/ test/, files `<subject>.csv`, header `,Question,A,B,C,D,Answer`
  (the first column is an unnamed row index).
- MMLU:   split folders dev/ val/ test/, files `<subject>_<split>.csv` with no header:
  `question,A,B,C,D,answer`.
Your own subject exam works in any of these layouts, with 2 to 10 options (A to J) per question:
the header's letter columns, or the width of a headerless row, say how many.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import layouts
from .files import read_text
from .layouts import LETTERS  # noqa: F401  (re-exported: the answer letters, A to J)

SPLITS = ("dev", "val", "test")


@dataclass
class Question:
    id: str
    question: str
    choices: list[str]  # texts of options A, B, C, ... (2 to 10, as many as the file has)
    answer: str | None  # "A", "B", ...; None on a test split without answers
    explanation: str | None
    source: str  # "file:line"


@dataclass
class Exam:
    layout: str  # a layouts.NAMES name: "ceval" | "cmmlu" | "mmlu"
    root: Path
    # subject -> split -> questions, subjects and splits in sorted order
    subjects: dict[str, dict[str, list[Question]]] = field(default_factory=dict)

    def count(self, split: str | None = None) -> int:
        return sum(len(qs) for s in self.subjects.values() for sp, qs in s.items() if split in (None, sp))

    def splits(self) -> list[str]:
        return [sp for sp in SPLITS if any(sp in s for s in self.subjects.values())]


def exam_files(root: Path) -> list[tuple[str, Path]]:
    """(split, csv file) pairs under an exam root: split folders, or a single CSV file."""
    if root.is_file():
        if root.suffix != ".csv":
            raise InputError(root, "expected a .csv exam file or a folder with dev/ val/ test/ folders")
        return [(_split_from_name(root), root)]
    if not root.is_dir():
        raise InputError(root, "no such file or directory")
    pairs = [(sp, f) for sp in SPLITS if (root / sp).is_dir() for f in sorted((root / sp).glob("*.csv"))]
    if not pairs:
        flat = sorted(root.glob("*.csv"))
        if not flat:
            raise InputError(root, "no exam found: expected dev/, val/ or test/ folders holding .csv files")
        pairs = [(_split_from_name(f), f) for f in flat]
    return pairs


def _split_from_name(f: Path) -> str:
    for sp in SPLITS:
        if f.stem.endswith("_" + sp):
            return sp
    return "test"


def is_exam_dir(root: Path) -> bool:
    """True for a folder with dev/ val/ test/ folders of CSV files (other files beside them, such as
    C-Eval's subject_mapping.json, are metadata), or a folder holding only CSV data files."""
    if not root.is_dir():
        return False
    if any((root / sp).is_dir() and any((root / sp).glob("*.csv")) for sp in SPLITS):
        return True
    return any(root.glob("*.csv")) and not any(p.suffix in (".txt", ".json", ".jsonl") for p in root.iterdir())


def read_exam(root: Path | str) -> Exam:
    root = Path(root)
    exam: Exam | None = None
    for split, f in exam_files(root):
        layout, subject, questions = read_exam_csv(f, split)
        if exam is None:
            exam = Exam(layout, root)
        elif layout != exam.layout:
            raise InputError(f, f"this file is in the {_title(layout)} layout but earlier files are in the "
                                f"{_title(exam.layout)} layout", line=1)
        exam.subjects.setdefault(subject, {})[split] = questions
    assert exam is not None
    exam.subjects = dict(sorted(exam.subjects.items()))
    return exam


def _title(name: str) -> str:
    lay = layouts.get(name)
    return lay.title if lay.header else f"{lay.title} (no header)"


def read_exam_csv(path: Path, split: str) -> tuple[str, str, list[Question]]:
    """Read one exam CSV; returns (layout name, subject, questions)."""
    text = read_text(path)
    if not text.strip():
        raise InputError(path, "empty file: expected exam questions in CSV")
    rows = _rows_with_lines(path, text)
    if not rows:
        raise InputError(path, "no questions: every row is empty")
    first = [c.strip() for c in rows[0][1]]
    lay = layouts.detect(first)
    if lay.header:
        width = len(rows[0][1])
        cols, n_options = _header_columns(path, rows[0][0], first)
        body = rows[1:]
        if not body:
            raise InputError(path, "the file has a header but no questions")
        expected = f"{width} cells like the header"
    else:
        # no header says how many options there are: the width most rows have does, so that the one
        # odd row (an unquoted comma) is the one named, even when it is the first
        width = Counter(len(row) for _, row in rows).most_common(1)[0][0]
        n_options = width - 2  # question, the options, answer
        if not layouts.MIN_OPTIONS <= n_options <= layouts.MAX_OPTIONS:
            line = next(line for line, row in rows if len(row) == width)
            raise InputError(path, f"wrong number of CSV cells: {width}, expected {lay.columns_hint()} "
                                   f"(2 to {layouts.MAX_OPTIONS} options)", line=line)
        cols = {"question": 0, **{x.lower(): 1 + k for k, x in enumerate(layouts.letters(n_options))},
                "answer": width - 1}
        body = rows
        expected = f"{width} cells: {lay.columns_hint(n_options)}"
    allowed = layouts.letters(n_options)
    # Only the C-Eval test split is published without answers.
    need_answer = split != lay.unanswered_split
    subject = path.stem[: -len(split) - 1] if path.stem.endswith("_" + split) else path.stem
    questions = []
    for n, (line, row) in enumerate(body):
        if len(row) != width:
            raise InputError(path, f"wrong number of CSV cells: {len(row)}, expected {expected}", line=line)
        q = row[cols["question"]].strip()
        if not q:
            raise InputError(path, "empty question", line=line, field="question")
        choices = [row[cols[k.lower()]].strip() for k in allowed]
        answer = row[cols["answer"]].strip() if "answer" in cols else ""
        if answer:
            if answer.upper() not in allowed or len(answer) != 1:
                raise InputError(path, f"answer {answer!r} is not one of {layouts.letter_list(n_options)}",
                                 line=line, field="answer")
            answer = answer.upper()
        elif need_answer:
            raise InputError(path, f"missing answer on the {split} split: expected one of "
                                   f"{layouts.letter_list(n_options)}", line=line, field="answer")
        qid = row[cols["id"]].strip() if "id" in cols else (row[0].strip() if lay.index_column else str(n))
        expl = row[cols["explanation"]].strip() if "explanation" in cols else None
        questions.append(Question(qid or str(n), q, choices, answer or None, expl, f"{path}:{line}"))
    return lay.name, subject, questions


def _header_columns(path: Path, line: int, first: list[str]) -> tuple[dict[str, int], int]:
    """Column positions from a header row, and the number of options: its letter columns, which must
    run A, B, C, ... without a gap, at least two (a header with fewer is told the four it lacks)."""
    lower = [c.lower() for c in first]
    present = [x for x in layouts.LETTERS if x.lower() in lower]
    n_options = len(present)
    last = layouts.LETTERS.index(present[-1]) + 1 if present else 0
    wanted = ("question",) + layouts.letters(max(n_options, last, 4 if n_options < 2 else 0))
    missing = [x for x in wanted if x.lower() not in lower]
    if missing:
        raise InputError(path, f"wrong CSV columns: missing {', '.join(missing)}; expected "
                               f"{layouts.get('ceval').columns_hint()} (C-Eval) or {layouts.get('cmmlu').columns_hint()} "
                               f"(CMMLU), with 2 to {layouts.MAX_OPTIONS} option columns", line=line)
    names = ("id", "question", "answer", "explanation") + tuple(x.lower() for x in present)
    return {name: lower.index(name) for name in names if name in lower}, n_options


def _rows_with_lines(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """CSV rows with the line each starts on (quoted cells may span lines)."""
    reader = csv.reader(io.StringIO(text))
    out = []
    start = 1
    try:
        for row in reader:
            if any(c.strip() for c in row):
                out.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(path, f"invalid CSV: {exc}", line=start) from None
    return out
