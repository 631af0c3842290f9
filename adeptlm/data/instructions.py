"""Instruction data: alpaca, messages and sharegpt records, normalised to conversations.

Shapes accepted (JSON array or JSON lines, one shape per file):
- alpaca:   {instruction, input?, output, system?, history?: [[user, assistant], ...]}
            (the seed's stem_zh_instruction and shared/data/instructions files)
- messages: {messages: [{role, content}, ...]} with roles system/user/assistant
- sharegpt: {conversations: [{from, value}, ...], system?} with from human/gpt/system
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .files import iter_json_records, require_object, require_str

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


@dataclass
class Conversation:
    messages: list[Message]
    source: str  # "file:line"
    warnings: list[str] = field(default_factory=list)


def instruction_shape(rec: dict) -> str | None:
    """Name the instruction shape of one record, or None when it is not an instruction record."""
    if "messages" in rec:
        return "messages"
    if "conversations" in rec and "chosen" not in rec:
        return "sharegpt"
    if "instruction" in rec:
        return "alpaca"
    return None


def read_instructions(path: Path) -> tuple[str, list[Conversation]]:
    """Read one instruction file; returns (shape, conversations)."""
    shape = None
    out: list[Conversation] = []
    for line, rec in iter_json_records(path):
        rec = require_object(path, line, rec)
        this = instruction_shape(rec)
        if this is None:
            raise InputError(path, "not an instruction record: expected 'instruction'+'output' (alpaca), "
                                   "'messages' or 'conversations'", line=line)
        if shape is None:
            shape = this
        elif this != shape:
            raise InputError(path, f"record is in the {this} shape but the file started in the {shape} shape",
                             line=line)
        out.append(_READERS[shape](path, line, rec))
    assert shape is not None  # iter_json_records never yields nothing without raising
    return shape, out


def from_alpaca(path: Path, line: int, rec: dict) -> Conversation:
    instruction = require_str(path, line, rec, "instruction")
    inp = rec.get("input") or ""
    if not isinstance(inp, str):
        raise InputError(path, f"expected a string, got {type(inp).__name__}", line=line, field="input")
    output = require_str(path, line, rec, "output", allow_empty=True)
    messages: list[Message] = []
    system = rec.get("system")
    if system:
        if not isinstance(system, str):
            raise InputError(path, f"expected a string, got {type(system).__name__}", line=line, field="system")
        messages.append({"role": "system", "content": system})
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise InputError(path, "expected a list of [user, assistant] pairs", line=line, field="history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise InputError(path, f"entry {i} must be a pair of strings [user, assistant]", line=line,
                             field="history")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    # The seed joins instruction and input with one newline when input is present.
    user = instruction + ("\n" + inp if inp.strip() else "")
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    conv = Conversation(messages, f"{path}:{line}")
    if not output.strip():
        conv.warnings.append("empty output")
    return conv


def from_messages(path: Path, line: int, rec: dict) -> Conversation:
    raw = rec["messages"]
    if not isinstance(raw, list) or not raw:
        raise InputError(path, "expected a non-empty list of {role, content}", line=line, field="messages")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InputError(path, f"message {i} must be an object with role and content", line=line,
                             field="messages")
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise InputError(path, f"message {i} has role {role!r}: expected system, user or assistant",
                             line=line, field="messages")
        content = require_str(path, line, m, "content", allow_empty=(role == "assistant"),
                              context=f" in message {i}")
        messages.append({"role": role, "content": content})
    return _checked(path, line, messages, "messages")


def from_sharegpt(path: Path, line: int, rec: dict) -> Conversation:
    messages = sharegpt_messages(path, line, rec.get("conversations"), "conversations")
    system = rec.get("system")
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": str(system)})
    return _checked(path, line, messages, "conversations")


def sharegpt_messages(path: Path, line: int, raw: Any, fld: str) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise InputError(path, "expected a non-empty list of {from, value}", line=line, field=fld)
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InputError(path, f"turn {i} must be an object with 'from' and 'value'", line=line, field=fld)
        role = SHAREGPT_ROLES.get(m.get("from"))
        if role is None:
            raise InputError(path, f"turn {i} has from={m.get('from')!r}: expected human, gpt or system",
                             line=line, field=fld)
        value = require_str(path, line, m, "value", allow_empty=(role == "assistant"), context=f" in turn {i}")
        messages.append({"role": role, "content": value})
    return messages


def _checked(path: Path, line: int, messages: list[Message], fld: str) -> Conversation:
    """Conversations must alternate user/assistant after an optional system and end with the assistant."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body:
        raise InputError(path, "only a system message: expected user and assistant turns", line=line, field=fld)
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise InputError(path, f"turn {i + len(messages) - len(body)} is {m['role']}, expected {want} "
                                   "(turns must alternate user/assistant after an optional system)",
                             line=line, field=fld)
    if body[-1]["role"] != "assistant":
        raise InputError(path, "the last turn is the user's: expected an assistant reply to train on",
                         line=line, field=fld)
    conv = Conversation(messages, f"{path}:{line}")
    if any(not m["content"].strip() for m in body if m["role"] == "assistant"):
        conv.warnings.append("empty output")
    return conv


_READERS = {"alpaca": from_alpaca, "messages": from_messages, "sharegpt": from_sharegpt}
