"""Say what kind of data a path holds and read it with the matching reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .corpus import JSON_SUFFIXES, TEXT_SUFFIXES, Document, read_corpus_file
from ..errors import InputError
from .files import iter_json_records, require_object
from .exams import Exam, exam_files, is_exam_dir, read_exam
from .feedback import Feedback, feedback_shape, read_feedback
from .instructions import Conversation, instruction_shape, read_instructions
from .preferences import PreferencePair, preference_shape, read_preferences

KINDS = ("corpus", "instructions", "preferences", "feedback", "exam")


@dataclass
class Loaded:
    kind: str  # one of KINDS
    shape: str  # the layout within the kind: txt/jsonl, alpaca/messages/sharegpt, pcr/sharegpt/emoji, feedback, ceval/...
    files: list[Path]
    records: list[Any] = field(default_factory=list)  # Documents, Conversations, PreferencePairs or Feedback
    exam: Exam | None = None


def file_kind(path: Path) -> str:
    """The kind of one data file, from its suffix and its first record."""
    if path.suffix == ".csv":
        return "exam"
    if path.suffix in TEXT_SUFFIXES:
        return "corpus"
    if path.suffix not in JSON_SUFFIXES:
        raise InputError(path, f"unsupported file type '{path.suffix}': expected .txt, .json, .jsonl or .csv")
    for line, rec in iter_json_records(path):
        rec = require_object(path, line, rec)
        if preference_shape(rec):
            return "preferences"
        if feedback_shape(rec):
            return "feedback"
        if instruction_shape(rec):
            return "instructions"
        if "text" in rec:
            return "corpus"
        raise InputError(path, "cannot tell the kind of record: expected 'text' (corpus), 'instruction'/"
                               "'messages'/'conversations' (instructions) or 'chosen'+'rejected' / "
                               "'answer_zh'+'answer_en' (preferences) or 'completion'+'label' (feedback)", line=line)
    raise AssertionError("unreachable: iter_json_records raises on an empty file")


def load_data(path: Path | str, kind: str | None = None) -> Loaded:
    """Read a file or directory of any supported kind; `kind` insists on one."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if is_exam_dir(path):
        found = "exam"
        files = [f for _, f in exam_files(path)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES)
        if not files:
            raise InputError(path, "empty directory: expected .txt, .json or .jsonl files, or an exam with "
                                   "dev/ val/ test/ folders of .csv files")
        kinds = {f: file_kind(f) for f in files}
        found = kinds[files[0]]
        for f, k in kinds.items():
            if k != found:
                raise InputError(f, f"holds {k} data while {files[0].name} in the same directory holds {found}")
    else:
        files = [path]
        found = file_kind(path)
    if kind == "feedback" and found == "preferences":   # KTO splits each pair into two feedback records
        found = "feedback"
    if kind and kind != found:
        raise InputError(path, f"expected {kind} data, found {found} data")
    if found == "exam":
        exam = read_exam(path)
        return Loaded("exam", exam.layout, files, exam=exam)
    loaded = Loaded(found, "", files)
    shapes = []
    for f in files:
        if found == "corpus":
            docs: list[Document] = read_corpus_file(f)
            loaded.records += docs
            shapes.append("txt" if f.suffix == ".txt" else "json")
        elif found == "instructions":
            shape, convs = read_instructions(f)
            loaded.records += convs
            shapes.append(shape)
        elif found == "feedback":
            shape, records = read_feedback(f)
            loaded.records += records
            shapes.append(shape)
        else:
            shape, pairs = read_preferences(f)
            loaded.records += pairs
            shapes.append(shape)
    loaded.shape = "+".join(sorted(set(shapes)))
    return loaded


__all__ = ["Loaded", "load_data", "file_kind", "KINDS", "Conversation", "PreferencePair", "Feedback", "Document"]
