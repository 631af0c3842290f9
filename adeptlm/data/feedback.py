"""Unpaired feedback for KTO, normalised to (prompt messages, completion, desirable).

Shapes accepted (JSON array or JSON lines):
- feedback: {prompt, completion, label}: TRL's unpaired preference shape; prompt a string or a message
            list ending with the user's turn, completion a string or a message list ending with the
            assistant's reply, label true (desirable) or false (undesirable), a JSON boolean
- a preference file in any shape data/preferences.py reads: each pair becomes two records, its
  chosen reply desirable and its rejected reply undesirable (as TRL's unpair_preference_dataset)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .files import iter_json_records, require_object
from .instructions import Message
from .preferences import preference_shape, read_preferences, read_prompt, reply


@dataclass
class Feedback:
    prompt: list[Message]  # ends with the user's turn
    completion: str
    desirable: bool
    source: str


def feedback_shape(rec: dict) -> str | None:
    return "feedback" if "completion" in rec and "label" in rec else None


def read_feedback(path: Path) -> tuple[str, list[Feedback]]:
    """(shape, records) of one file: 'feedback', or the preference shape whose pairs were split."""
    first = next(iter_json_records(path))
    if preference_shape(require_object(path, first[0], first[1])):
        shape, pairs = read_preferences(path)
        return shape, [Feedback(p.prompt, text, good, p.source) for p in pairs
                       for text, good in ((p.chosen, True), (p.rejected, False))]
    out = []
    for line, rec in iter_json_records(path):
        rec = require_object(path, line, rec)
        if feedback_shape(rec) is None:
            raise InputError(path, "not a feedback record: expected prompt/completion/label (label true or false), "
                                   "or a file of preference pairs", line=line)
        label = rec["label"]
        if not isinstance(label, bool):
            raise InputError(path, f"expected true or false (is the completion desirable?), got {label!r}",
                             line=line, field="label")
        out.append(Feedback(read_prompt(path, line, rec), reply(path, line, rec, "completion"), label,
                            f"{path}:{line}"))
    return "feedback", out
