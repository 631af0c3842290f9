"""The least time one LoRA training step can take on this machine with torch's fp32 kernels.

Issue 22, item 1 asks `adept pt` for 2.5x the tokens/s of the seed's Trainer + PEFT run. This bench
asks whether any implementation built on torch's CPU kernels could get there: it times, alone and at
the exact shapes of one step, only the work that no LoRA implementation can skip, and adds it up:

  - frozen:    every frozen Linear (the 7 projections of each layer and the LM head): the forward
               product, and the backward product to its input (the weight gets no gradient);
  - lora:      the LoRA products of the adapted projections: x@A^T and h@B^T forward; backward the
               gradient to h, to B, to A, and through A to x;
  - attention: torch's scaled_dot_product_attention, causal, forward and backward (the CPU flash
               kernel both adept and the seed's way use);
  - loss:      the cross-entropy over the vocabulary at every position (in PT every position is
               trained), forward and backward, in adeptlm's cheapest form (train/cpu/loss.py's
               head_cross_entropy: log_softmax in place in the logits' own buffer, the gradient
               formed in place after it);
  - head_full: with --save embed (modules_to_save embed_tokens,lm_head), the LM head's weight
               gradient as well.

Everything else a real step does is left out, so the sum is a floor for implementations built on
these kernels and the matching tokens/s a ceiling: norms, activations, residual adds, rotary
embeddings, dropout, the embedding's gradient, the optimizer, and the copies between kernels. Each
matrix product writes into a preallocated output (no allocation); every part is timed after two
warm-up calls, as the median of --repeats.

    python bench/floor.py [--model gemma3-270m] [--batch 2] [--block 512] [--rank 64] [--save none|embed]
                          [--stock_tps 182.2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import ROOT, TARGETS, meta_model  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def linear_shapes(model: str | None) -> tuple[Counter, tuple[int, int], object]:
    """(count of (name, in, out) over the body's Linears, the LM head's (in, out), the config)."""
    import torch

    m = meta_model(model)
    config = m.config
    shapes = Counter((name.rsplit(".", 1)[-1], mod.in_features, mod.out_features)
                     for name, mod in m.model.named_modules() if isinstance(mod, torch.nn.Linear))
    head = (m.lm_head.in_features, m.lm_head.out_features)
    return shapes, head, getattr(config, "text_config", config)


def mm_time(rows: int, inner: int, cols: int, repeats: int, ta: bool = False, tb: bool = False) -> float:
    """One [rows, inner] @ [inner, cols] product into a preallocated output; ta / tb: that operand is
    a transposed view of a contiguous tensor, as autograd hands it (x @ W.t(), G.t() @ h)."""
    import torch

    a = torch.randn(inner, rows).t() if ta else torch.randn(rows, inner)
    b = torch.randn(cols, inner).t() if tb else torch.randn(inner, cols)
    out = torch.empty(rows, cols)
    return timed(lambda: torch.mm(a, b, out=out), repeats)


def attention_time(batch: int, block: int, cfg, repeats: int) -> float:
    """Causal SDPA forward + backward for one layer, grouped-query heads as the model has them."""
    import torch
    import torch.nn.functional as F

    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    q = torch.randn(batch, heads, block, dim, requires_grad=True)
    k = torch.randn(batch, kv, block, dim, requires_grad=True)
    v = torch.randn(batch, kv, block, dim, requires_grad=True)
    grad = torch.randn(batch, heads, block, dim)

    def step():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != heads)
        out.backward(grad)
        q.grad = k.grad = v.grad = None

    return timed(step, repeats)


def loss_time(rows: int, vocab: int, repeats: int) -> float:
    """adeptlm's cross-entropy around the head's products (loss.py's _HeadCrossEntropy without its
    two matrix products, which the frozen products count): log_softmax in place in the logits'
    buffer, the picked log-probabilities, and softmax - onehot formed in the same buffer."""
    import torch

    from adeptlm.train.cpu.loss import _log_softmax_in_place, softmax_minus_onehot_

    buf = torch.randn(rows, vocab)
    target = torch.randint(0, vocab, (rows,))

    def step():
        # the buffer holds the last step's softmax - onehot: as costly to normalise as fresh logits
        logp = _log_softmax_in_place(buf)
        logp.gather(1, target.unsqueeze(1)).sum()
        softmax_minus_onehot_(logp, target)

    return timed(step, repeats)


def floor(model: str | None, batch: int, block: int, rank: int, save: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    shapes, (h_in, h_out), cfg = linear_shapes(model)
    t = batch * block
    parts = {"frozen": 0.0, "lora": 0.0, "attention": 0.0, "loss": 0.0, "head_full": 0.0}
    for (name, n_in, n_out), count in sorted(shapes.items()):
        # x @ W.t() forward, G @ W backward to the input
        parts["frozen"] += count * (mm_time(t, n_in, n_out, repeats, tb=True) + mm_time(t, n_out, n_in, repeats))
        if name in TARGETS:
            parts["lora"] += count * (
                mm_time(t, n_in, rank, repeats, tb=True) + mm_time(t, rank, n_out, repeats, tb=True)  # x A^T, h B^T
                + mm_time(t, n_out, rank, repeats)                                                   # grad h = G B
                + mm_time(n_out, t, rank, repeats, ta=True)                                          # grad B = G^T h
                + mm_time(rank, t, n_in, repeats, ta=True)                                           # grad A = gh^T x
                + mm_time(t, rank, n_in, repeats))                                                   # grad x = gh A
    parts["frozen"] += mm_time(t, h_in, h_out, repeats, tb=True) + mm_time(t, h_out, h_in, repeats)
    if save == "embed":
        parts["head_full"] = mm_time(h_out, t, h_in, repeats, ta=True)
    parts["attention"] = cfg.num_hidden_layers * attention_time(batch, block, cfg, repeats)
    parts["loss"] = loss_time(t, h_out, repeats)
    total = sum(parts.values())
    body = sum(n_in * n_out * c for (_, n_in, n_out), c in shapes.items()) + h_in * h_out
    flops = 4 * body * t + (2 * h_in * h_out * t if save == "embed" else 0) + sum(
        6 * rank * (n_in + n_out) * c * t for (name, n_in, n_out), c in shapes.items() if name in TARGETS)
    return {"tokens_per_step": t, "seconds": parts, "floor_s": total, "ceiling_tokens_per_s": t / total,
            "matmul_gflops_in_floor": flops / (parts["frozen"] + parts["lora"] + parts["head_full"]) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a known model name (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--save", choices=["none", "embed"], default="none",
                    help="embed: the LM head is trained in full too (modules_to_save embed_tokens,lm_head)")
    ap.add_argument("--stock_tps", type=float, help="the seed's way's measured tokens/s, to set the ceiling against")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", help="where the figures go (default bench/out/floor.json)")
    args = ap.parse_args()
    result = floor(args.model, args.batch, args.block, args.rank, args.save, args.repeats)
    if args.stock_tps:
        result["stock_tokens_per_s"] = args.stock_tps
        result["ceiling_over_stock"] = result["ceiling_tokens_per_s"] / args.stock_tps
        # The step time 2.5x the stock rate allows, and how much of it the floor already takes.
        budget = result["tokens_per_step"] / (2.5 * args.stock_tps)
        result["budget_s_at_2_5x"] = budget
        result["floor_share_of_budget"] = result["floor_s"] / budget
    result["setting"] = {"model": args.model or "embedded", "batch": args.batch, "block": args.block,
                         "rank": args.rank, "save": args.save, "repeats": args.repeats}
    out = Path(args.out or ROOT / "bench" / "out" / "floor.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
