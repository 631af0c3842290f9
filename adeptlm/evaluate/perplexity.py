"""`adept eval ppl`: perplexity of a model on a corpus, with a sliding window over each document.

Each document is scored on its own: windows of `max_length` tokens advance by `stride`, and each
window only scores the tokens the previous one did not, so every token after a document's first is
predicted exactly once with up to max_length - stride tokens of context. Perplexity is
exp(total negative log-likelihood / tokens scored); the token count is reported beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..data.corpus import read_corpus
from ..errors import AdeptError


def perplexity(model, tokenizer, texts: list[str], max_length: int = 1024, stride: int = 512) -> dict:
    import torch

    if not 0 < stride <= max_length:
        raise AdeptError(f"--stride must be between 1 and --max_length ({max_length}), got {stride}")
    nll, count = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text)["input_ids"]
            prev_end = 0
            for begin in range(0, len(ids), stride):
                end = min(begin + max_length, len(ids))
                window = torch.tensor([ids[begin:end]])
                logprobs = torch.log_softmax(model(input_ids=window).logits[0].float(), dim=-1)
                # score targets at positions max(prev_end, begin+1)..end-1 (each exactly once)
                first = max(prev_end, begin + 1)
                pos = torch.arange(first - begin, end - begin)
                if len(pos):
                    nll -= logprobs[pos - 1, window[0, pos]].sum().item()
                    count += len(pos)
                prev_end = end
                if end == len(ids):
                    break
    return {"perplexity": math.exp(nll / count) if count else float("nan"), "tokens": count,
            "nll": nll, "documents": len(texts), "max_length": max_length, "stride": stride}


def run_ppl(model_spec: str | None, data: Path, max_length: int, stride: int, dtype: str = "float32",
            output: Path | None = None) -> dict:
    from ..models import load_model
    from ..runrecord import write_run

    docs = read_corpus(data)
    model, tok = load_model(model_spec, dtype=dtype)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        max_length = limit
    result = perplexity(model, tok, [d.text for d in docs], max_length, min(stride, max_length))
    result.update({"model": str(model_spec or "smollm2-135m-instruct"), "data": str(data)})
    if output:
        write_run(output, "ppl", {"model": result["model"], "data": str(data), "max_length": max_length,
                                  "stride": stride, "dtype": dtype}, result)
    return result
