"""Raw text for continued pre-training: a directory of .txt files, or .json / .jsonl with `text`.

A .txt file holds documents separated by one or more blank lines (a file without blank lines is
one document per file); line breaks inside a document are kept. The seed tokenised every line as
its own sample with a BOS in front; keeping documents whole lets the tokenizer stage put one
end-of-text token between documents instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .files import iter_json_records, read_text, require_object, require_str

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".json", ".jsonl")


@dataclass
class Document:
    text: str
    source: str  # "file:line" of the document's first line


def corpus_files(path: Path) -> list[Path]:
    """The files a corpus path stands for, sorted so runs are repeatable."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(path, "no such file or directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES)
    if not files:
        raise InputError(path, "empty directory: expected .txt files (or .json/.jsonl with a 'text' field)")
    return files


def read_corpus(path: Path | str) -> list[Document]:
    docs: list[Document] = []
    for f in corpus_files(Path(path)):
        docs.extend(read_corpus_file(f))
    return docs


def read_corpus_file(path: Path) -> list[Document]:
    if path.suffix in JSON_SUFFIXES:
        docs = []
        for line, rec in iter_json_records(path):
            rec = require_object(path, line, rec)
            docs.append(Document(require_str(path, line, rec, "text"), f"{path}:{line}"))
        return docs
    if path.suffix not in TEXT_SUFFIXES:
        raise InputError(path, f"unsupported corpus file type '{path.suffix}': expected .txt, .json or .jsonl")
    text = read_text(path)
    if not text.strip():
        raise InputError(path, "empty file: expected text")
    docs = []
    for m in re.finditer(r"\S(?:.|\n(?![ \t\r]*\n))*", text):
        body = m.group(0).rstrip()
        docs.append(Document(body, f"{path}:{text.count(chr(10), 0, m.start()) + 1}"))
    return docs
