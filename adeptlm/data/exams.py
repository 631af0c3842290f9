"""Multiple-choice exams in the C-Eval, CMMLU and MMLU layouts, detected from the files.

- C-Eval: split folders dev/ val/ test/, files `<subject>_<split>.csv`, header
  `id,question,A,B,C,D,answer[,explanation]` (test has no answer column).
- CMMLU:  split folders dev/ test/, files `<subject>.csv`, header `,Question,A,B,C,D,Answer`
  (the first column is an unnamed row index).
- MMLU:   split folders dev/ val/ test/, files `<subject>_<split>.csv` with no header:
  `question,A,B,C,D,answer`.
Your own subject exam works in any of these layouts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .files import read_text

SPLITS = ("dev", "val", "test")
LETTERS = ("A", "B", "C", "D")


@dataclass
class Question:
    id: str
    question: str
    choices: list[str]  # texts of A, B, C, D
    answer: str | None  # "A".."D"; None on a test split without answers
    explanation: str | None
    source: str  # "file:line"


@dataclass
class Exam:
    layout: str  # "ceval" | "cmmlu" | "mmlu"
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
            raise InputError(f, f"this file is in the {_NAMES[layout]} layout but earlier files are in the "
                                f"{_NAMES[exam.layout]} layout", line=1)
        exam.subjects.setdefault(subject, {})[split] = questions
    assert exam is not None
    exam.subjects = dict(sorted(exam.subjects.items()))
    return exam


_NAMES = {"ceval": "C-Eval", "cmmlu": "CMMLU", "mmlu": "MMLU (no header)"}


def read_exam_csv(path: Path, split: str) -> tuple[str, str, list[Question]]:
    """Read one exam CSV; returns (layout, subject, questions)."""
    text = read_text(path)
    if not text.strip():
        raise InputError(path, "empty file: expected exam questions in CSV")
    rows = _rows_with_lines(path, text)
    if not rows:
        raise InputError(path, "no questions: every row is empty")
    first = [c.strip() for c in rows[0][1]]
    lower = [c.lower() for c in first]
    if "question" in lower:
        cols = {name: lower.index(name) for name in ("id", "question", "a", "b", "c", "d", "answer", "explanation")
                if name in lower}
        missing = [n.upper() if len(n) == 1 else n for n in ("question", "a", "b", "c", "d") if n not in cols]
        if missing:
            raise InputError(path, f"wrong CSV columns: missing {', '.join(missing)}; expected "
                                   "id,question,A,B,C,D,answer (C-Eval) or ,Question,A,B,C,D,Answer (CMMLU)",
                             line=rows[0][0])
        layout = "cmmlu" if "Question" in first else "ceval"
        body = rows[1:]
        if not body:
            raise InputError(path, "the file has a header but no questions")
    else:
        layout, body = "mmlu", rows
        cols = {"question": 0, "a": 1, "b": 2, "c": 3, "d": 4, "answer": 5}
    width = 6 if layout == "mmlu" else len(rows[0][1])   # MMLU's files have no header to take it from
    # Only the C-Eval test split is published without answers.
    need_answer = not (layout == "ceval" and split == "test")
    subject = path.stem[: -len(split) - 1] if path.stem.endswith("_" + split) else path.stem
    questions = []
    for n, (line, row) in enumerate(body):
        if len(row) != width:
            expected = "6 cells: question,A,B,C,D,answer" if layout == "mmlu" else f"{width} cells like the header"
            raise InputError(path, f"wrong number of CSV cells: {len(row)}, expected {expected}", line=line)
        q = row[cols["question"]].strip()
        if not q:
            raise InputError(path, "empty question", line=line, field="question")
        choices = [row[cols[k]].strip() for k in ("a", "b", "c", "d")]
        answer = row[cols["answer"]].strip() if "answer" in cols else ""
        if answer:
            if answer.upper() not in LETTERS or len(answer) != 1:
                raise InputError(path, f"answer {answer!r} is not one of A, B, C, D", line=line, field="answer")
            answer = answer.upper()
        elif need_answer:
            raise InputError(path, f"missing answer on the {split} split: expected one of A, B, C, D", line=line,
                             field="answer")
        qid = row[cols["id"]].strip() if "id" in cols else (row[0].strip() if layout == "cmmlu" else str(n))
        expl = row[cols["explanation"]].strip() if "explanation" in cols else None
        questions.append(Question(qid or str(n), q, choices, answer or None, expl, f"{path}:{line}"))
    return layout, subject, questions


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
