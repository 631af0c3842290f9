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
    from .backends import HFBackend
    from .templates import encode_prompt, get_template

    backend = HFBackend.load(model, batch_size=batch_size)
    tok = backend.tokenizer
    template = get_template(tok)
    stop = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids(template.eot)} if i is not None]
    ids = [encode_prompt(tok, template, [{"role": "user", "content": p}]) for p in prompts]
    t0 = time.time()
    outs = backend.generate(ids, max_new_tokens, stop)
    records = [{"instruction": p, "input": "", "output": tok.decode(o, skip_special_tokens=True).strip()}
               for p, o in zip(prompts, outs)]
    records = [r for r in records if r["output"]]  # an empty answer teaches nothing
    write_text(out_file, json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return {"prompts": len(prompts), "records": len(records), "seconds": round(time.time() - t0, 1),
            "max_new_tokens": max_new_tokens}
