"""LoRA's input dropout with a cheaper random-number source and mask.

PEFT puts an nn.Dropout before every LoRA A matrix (7 per layer in the usual setting). On CPU,
torch draws that mask with a Mersenne-Twister Bernoulli, a noticeable share of a LoRA step
(bench/RESULTS.md). Here the mask comes from NumPy's SFC64 generator, 16 random bits per element
(cheaper than PCG64 at 32 bits), and is
applied as a float multiplier: multiplying by a boolean tensor makes torch promote it to float on
every use, which cost more than the multiply itself.

The distribution: each element is kept independently with probability 1 - p, scaled by 1 / (1 - p);
eval mode is the identity. With 16-bit draws p is rounded to a multiple of 2^-16 (for p = 0.05 the
drop rate is 0.0500031); a p below 1/128, where that rounding would move it by more than 0.1%, draws
32 bits instead. Each call seeds its generator from torch's global generator, so runs stay
reproducible under `set_seed`, and a resumed run (whose torch RNG state the Trainer restores) draws
the same masks.
"""

from __future__ import annotations

import numpy as np
import torch


class _MaskedScale(torch.autograd.Function):
    """out = x * keep * scale; only the one-byte mask is kept for the backward pass."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * _multiplier(keep, scale, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * _multiplier(keep, ctx.scale, grad.dtype), None, None


def _multiplier(keep: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    # uint8 -> float converts several times faster than bool -> float (torch 2.13, CPU)
    return keep.to(dtype).mul_(scale)


class FastDropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ValueError(f"dropout probability must be in (0, 1), got {p}")
        self.p = p
        self.bits = 16 if p >= 1 / 128 else 32
        dtype = np.uint16 if self.bits == 16 else np.uint32
        self.threshold = dtype(min(round(p * 2**self.bits), 2**self.bits - 1))

    def draw_keep(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh mask for `x`: a uint8 tensor of x's shape, 1 where the element is kept."""
        seed = int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64).item())
        n = x.numel()
        per_word = 64 // self.bits
        raw = np.random.SFC64(seed).random_raw(-(-n // per_word)).view(self.threshold.dtype)[:n]
        return torch.from_numpy(np.greater_equal(raw, self.threshold).view(np.uint8)).view(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, self.training)
        return _MaskedScale.apply(x, self.draw_keep(x), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model) -> int:
    """Swap every LoRA nn.Dropout of a PEFT model for FastDropout; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is torch.nn.Dropout and 0.0 < drop.p < 1.0:
                drops[name] = FastDropout(drop.p)
                drops[name].train(drop.training)
                swapped += 1
    return swapped
