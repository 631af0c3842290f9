"""Self-replay against forgetting: the base model's own answers to general questions, for SFT.

Fine-tuning a small model on one subject's questions alone teaches it that every question is about
that subject (the 135M demo model answered "Which ocean is the largest?" with an island's river).
Mixing in pairs whose answers the base model wrote itself keeps its general behaviour as a training
target without adding knowledge it did not have, so the general exam still measures what was kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from .atomic import write_text


def write_replay(model: str, prompts: Sequence[str], out_file: Path, max_new_tokens: int = 48,
                 batch_size: int = 8) -> dict:
    """Greedy answers of `model` (in its chat template) to `prompts`, written as alpaca records."""
    from .backends import chat_greedy

    t0 = time.time()
    answers = chat_greedy(model, prompts, max_new_tokens, batch_size)
    records = [{"instruction": p, "input": "", "output": a} for p, a in zip(prompts, answers)]
    records = [r for r in records if r["output"]]  # an empty answer teaches nothing
    write_text(out_file, json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return {"prompts": len(prompts), "records": len(records), "seconds": round(time.time() - t0, 1),
            "max_new_tokens": max_new_tokens}
