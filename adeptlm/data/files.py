"""Reading a user's files safely: UTF-8 with line numbers, JSON arrays or lines record by record,
required fields; every problem is an InputError naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

TOO_DEEP = "invalid JSON: nested too deeply (arrays or objects inside one another beyond Python's recursion limit)"


def read_text(path: Path) -> str:
    """Read a UTF-8 file (a BOM is allowed); non-UTF-8 bytes stop with their line number."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            path, f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded; save the file as UTF-8",
            line=line,
        ) from None


def load_json(path: Path) -> Any:
    """A whole UTF-8 JSON file; invalid or too deeply nested JSON stops with its line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    except RecursionError:
        raise InputError(path, TOO_DEEP) from None


def load_json_line(path: Path, line: int, raw: str) -> Any:
    """One line of a JSON-lines file."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=line) from None
    except RecursionError:
        raise InputError(path, TOO_DEEP, line=line) from None


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, record) from a JSON array file or a JSON-lines file.

    The standard library's `json.load` loses positions, so the array is decoded element by
    element with `raw_decode` to keep each record's line for error messages.
    """
    text = read_text(path)
    start = _skip_ws(text, 0)
    if start == len(text):
        raise InputError(path, "empty file: expected a JSON array or JSON lines")
    if text[start] == "[":
        yield from _iter_array(path, text, start)
    elif text[start] == "{":
        yield from _iter_lines(path, text)
    else:
        raise InputError(path, f"expected a JSON array '[' or JSON lines of objects, found {text[start]!r}",
                         line=line_of(text, start))


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _iter_array(path: Path, text: str, start: int) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    i = _skip_ws(text, start + 1)
    if i < len(text) and text[i] == "]":
        raise InputError(path, "the JSON array is empty: expected at least one record", line=line_of(text, i))
    while True:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        except RecursionError:     # the decoder recurses once per level of nesting
            raise InputError(path, TOO_DEEP, line=line_of(text, i)) from None
        yield line_of(text, i), obj
        i = _skip_ws(text, end)
        if i >= len(text):
            raise InputError(path, "invalid JSON: the array is not closed with ']'", line=line_of(text, i))
        if text[i] == "]":
            rest = _skip_ws(text, i + 1)
            if rest != len(text):
                raise InputError(path, "invalid JSON: extra data after the closing ']'", line=line_of(text, rest))
            return
        if text[i] != ",":
            raise InputError(path, f"invalid JSON: expected ',' or ']' between records, found {text[i]!r}",
                             line=line_of(text, i))
        i = _skip_ws(text, i + 1)


def _iter_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        yield lineno, load_json_line(path, lineno, raw)


def require_str(path: Path, line: int, rec: dict, key: str, *, allow_empty: bool = False,
                context: str = "") -> str:
    """The value of a required string field, or an InputError naming it."""
    if key not in rec:
        have = ", ".join(sorted(map(str, rec))) or "none"
        raise InputError(path, f"missing{context}: expected a string (fields present: {have})", line=line, field=key)
    value = rec[key]
    if not isinstance(value, str):
        raise InputError(path, f"expected a string{context}, got {type(value).__name__}", line=line, field=key)
    if not allow_empty and not value.strip():
        raise InputError(path, f"empty{context}: expected non-empty text", line=line, field=key)
    return value


def require_object(path: Path, line: int, rec: Any) -> dict:
    if not isinstance(rec, dict):
        raise InputError(path, f"expected a JSON object per record, got {type(rec).__name__}", line=line)
    return rec
