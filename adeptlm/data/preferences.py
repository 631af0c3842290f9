"""Preference pairs for DPO, normalised to (prompt messages, chosen reply, rejected reply).

Shapes accepted (JSON array or JSON lines):
- pcr:      {prompt, chosen, rejected}; prompt a string or a message list, chosen/rejected a string
            or a message list ending with the assistant's reply (TRL's conversational shape)
- sharegpt: {conversations: [{from, value}...], chosen: {from, value}, rejected: {from, value}}
            (shared/data/preferences/dpo_zh_demo.json)
- emoji:    {question, answer_zh, answer_en}: DPO-zh-en-emoji, chosen = answer_zh, rejected = answer_en
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .files import iter_json_records, require_object, require_str
from .instructions import Message, sharegpt_messages


@dataclass
class PreferencePair:
    prompt: list[Message]  # ends with the user's turn
    chosen: str
    rejected: str
    source: str


def preference_shape(rec: dict) -> str | None:
    if "chosen" in rec and "rejected" in rec:
        return "sharegpt" if "conversations" in rec else "pcr"
    if "answer_zh" in rec and "answer_en" in rec:
        return "emoji"
    return None


def read_preferences(path: Path) -> tuple[str, list[PreferencePair]]:
    shape = None
    out: list[PreferencePair] = []
    for line, rec in iter_json_records(path):
        rec = require_object(path, line, rec)
        this = preference_shape(rec)
        if this is None:
            raise InputError(path, "not a preference record: expected prompt/chosen/rejected, "
                                   "conversations/chosen/rejected or question/answer_zh/answer_en", line=line)
        if shape is None:
            shape = this
        elif this != shape:
            raise InputError(path, f"record is in the {this} shape but the file started in the {shape} shape",
                             line=line)
        out.append(_READERS[shape](path, line, rec))
    assert shape is not None
    return shape, out


def _pcr(path: Path, line: int, rec: dict) -> PreferencePair:
    return PreferencePair(read_prompt(path, line, rec), reply(path, line, rec, "chosen"),
                          reply(path, line, rec, "rejected"), f"{path}:{line}")


def read_prompt(path: Path, line: int, rec: dict) -> list[Message]:
    """A record's 'prompt': a string (one user turn) or a message list ending with the user's turn."""
    prompt = rec.get("prompt")
    if isinstance(prompt, str):
        prompt_msgs = [{"role": "user", "content": require_str(path, line, rec, "prompt")}]
    elif isinstance(prompt, list) and prompt:
        prompt_msgs = []
        for i, m in enumerate(prompt):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise InputError(path, f"message {i} must be {{role: system|user|assistant, content: string}}",
                                 line=line, field="prompt")
            prompt_msgs.append({"role": m["role"], "content": m["content"]})
        if prompt_msgs[-1]["role"] != "user":
            raise InputError(path, "the prompt must end with a user message", line=line, field="prompt")
    else:
        raise InputError(path, "missing or empty: expected a string or a list of messages", line=line,
                         field="prompt")
    return prompt_msgs


def reply(path: Path, line: int, rec: dict, key: str) -> str:
    """A reply: a string, or a message list whose last message is the assistant's (TRL's conversational shape)."""
    value: Any = rec.get(key)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1]
        if value.get("role") != "assistant":
            raise InputError(path, "the last message must be the assistant's reply", line=line, field=key)
        return require_str(path, line, value, "content", context=f" in {key}")
    return require_str(path, line, rec, key)


def _sharegpt(path: Path, line: int, rec: dict) -> PreferencePair:
    prompt = sharegpt_messages(path, line, rec.get("conversations"), "conversations")
    if prompt[-1]["role"] != "user":
        raise InputError(path, "the conversation must end with the human's turn", line=line,
                         field="conversations")
    replies = []
    for key in ("chosen", "rejected"):
        turn = rec[key]
        if not isinstance(turn, dict):
            raise InputError(path, "expected an object {from: gpt, value: text}", line=line, field=key)
        replies.append(require_str(path, line, turn, "value", context=f" in {key}"))
    return PreferencePair(prompt, replies[0], replies[1], f"{path}:{line}")


def _emoji(path: Path, line: int, rec: dict) -> PreferencePair:
    question = require_str(path, line, rec, "question")
    return PreferencePair([{"role": "user", "content": question}], require_str(path, line, rec, "answer_zh"),
                          require_str(path, line, rec, "answer_en"), f"{path}:{line}")


_READERS = {"pcr": _pcr, "sharegpt": _sharegpt, "emoji": _emoji}
