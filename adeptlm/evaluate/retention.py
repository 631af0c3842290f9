"""`adept eval retention`: how far a tuned model's general behaviour moved from its base model's.

Far more sensitive than a small general exam, and measured where a user notices it:

- on general text that is not the subject: both models' perplexity, and the mean KL divergence
  KL(base || tuned) of their next-token distributions with the share of positions whose top token
  is the same (as llama.cpp's `llama-perplexity --kl-divergence` reports them: the reference is the
  base model's distribution, averaged over every scored token);
- on general prompts: the share of greedy answers (in the chat template) that are the base model's
  own answer, with the changed ones listed side by side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..errors import AdeptError

GREEDY_TOKENS = 32


def kl_rows(logp_ref, logp):
    """KL(ref || model) per row of two log-probability matrices (N x V)."""
    import torch

    return (torch.exp(logp_ref) * (logp_ref - logp)).sum(-1)


def text_probe(base, tuned, tokenizer, texts: Sequence[str], max_length: int = 512,
               batch_tokens: int = 2048) -> dict:
    """Perplexities, mean KL(base || tuned) and top-token agreement over the texts' tokens; each text
    is cut into windows of max_length tokens, each token after a window's first is scored once.
    Windows run many to a batch (right-padded, masked, up to about batch_tokens tokens): general text
    is often many short documents, and one forward pass each cost more in overhead than in work."""
    import torch

    windows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        for begin in range(0, max(len(ids) - 1, 0), max_length):
            window = ids[begin:begin + max_length + 1]
            if len(window) >= 2:
                windows.append(window)
    windows.sort(key=len, reverse=True)
    batches, start = [], 0
    while start < len(windows):
        rows = max(1, batch_tokens // len(windows[start]))
        batches.append(windows[start:start + rows])
        start += rows
    nll_b = nll_t = kl = 0.0
    same = count = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for batch in batches:
            width = len(batch[0])
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, w in enumerate(batch):
                ids[r, :len(w)] = torch.tensor(w)
                mask[r, :len(w)] = 1
            inputs, valid = ids[:, :-1], mask[:, 1:].bool()
            target = ids[:, 1:][valid]
            lb = torch.log_softmax(base(input_ids=inputs, attention_mask=mask[:, :-1]).logits[valid].float(), -1)
            lt = torch.log_softmax(tuned(input_ids=inputs, attention_mask=mask[:, :-1]).logits[valid].float(), -1)
            rows = torch.arange(len(target))
            nll_b -= lb[rows, target].sum().item()
            nll_t -= lt[rows, target].sum().item()
            kl += kl_rows(lb, lt).sum().item()
            same += int((lb.argmax(-1) == lt.argmax(-1)).sum())
            count += len(target)
    if not count:
        raise AdeptError("the retention text has no tokens to score")
    return {"tokens": count, "base_perplexity": math.exp(nll_b / count), "perplexity": math.exp(nll_t / count),
            "mean_kl": kl / count, "same_top_token": same / count}


def greedy_probe(base_spec: str, tuned_spec: str, prompts: Sequence[str], max_new_tokens: int = GREEDY_TOKENS) -> dict:
    """Greedy answers of both models to the prompts: the share the tuned model left as the base said it."""
    from ..backends import chat_greedy

    answers = {side: chat_greedy(spec, prompts, max_new_tokens) for side, spec in (("base", base_spec),
                                                                                   ("tuned", tuned_spec))}
    changed = [{"prompt": p, "base": b, "tuned": t} for p, b, t in zip(prompts, answers["base"], answers["tuned"])
               if b != t]
    return {"prompts": len(prompts), "same_answers": len(prompts) - len(changed),
            "same_share": (len(prompts) - len(changed)) / len(prompts) if prompts else None,
            "max_new_tokens": max_new_tokens, "changed": changed}


def run_retention(base_spec: str, tuned_spec: str, data: Path | None, prompts: Sequence[str] | None,
                  max_length: int = 512, output: Path | None = None) -> dict:
    from ..data.corpus import read_corpus
    from ..models import load_model
    from ..runrecord import write_run

    result: dict = {"base": str(base_spec), "model": str(tuned_spec)}
    if data is not None:
        base, tok = load_model(base_spec)
        tuned, tok_t = load_model(tuned_spec)
        if tok.get_vocab() != tok_t.get_vocab():
            raise AdeptError(f"{tuned_spec}: its vocabulary differs from {base_spec}'s; KL needs the same tokens")
        result["text"] = text_probe(base, tuned, tok, [d.text for d in read_corpus(data)], max_length)
        result["text"]["data"] = str(data)
        del base, tuned
    if prompts:
        result["greedy"] = greedy_probe(base_spec, tuned_spec, prompts)
    if output:
        write_run(output, "retention", {"base": str(base_spec), "model": str(tuned_spec), "data": str(data),
                                        "max_length": max_length}, result)
    return result


def read_prompts(path: Path) -> list[str]:
    from ..data.files import load_json

    try:
        prompts = load_json(path)
    except OSError as exc:
        raise AdeptError(f"{path}: cannot read the prompts: {exc.strerror}") from None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise AdeptError(f"{path}: prompts are a JSON list of strings")
    return prompts
