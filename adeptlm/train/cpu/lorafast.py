"""A leaner forward for PEFT's LoRA Linear layers (written against PEFT 0.21.2; on with --cpu_kernels,
see switch.py; tests/unit/test_lorafast.py compares it with PEFT's own forward).

PEFT computes `result + lora_B(lora_A(dropout(x))) * scaling`: after the B matmul, one pass over the
layer's whole output to scale it and another to add it, each writing a new tensor as large as the
output. torch.addmm(result, h, B^T, alpha=scaling) does both inside the matrix multiply. The
arithmetic is the same (the backward pass scales only the r-wide gradients). Only the plain case
takes this path: one active adapter, not merged, no DoRA or other variant, plain nn.Linear modules
without hooks, no autocast, one dtype; anything else runs PEFT's own forward.

With LoRA dropout (FastDropout, in training) the autograd graph would also keep each layer's dropped
input, x * mask / (1 - p), to form the gradient of A: one float per input element for each of the
7 adapted projections, 1.2 GB at 4 x 512 tokens of the embedded model (by count), while the projections
of one input (q, k, v; gate, up) share x itself. _LoraDropout keeps x (shared), the one-byte mask
and the r-wide h instead, and forms the dropped input again in the backward pass (one more pass over
x per projection). Its effect: bench/RESULTS.md ("SFT: LoRA dropout without a float copy").
"""

from __future__ import annotations

import types

import torch

from .dropout import FastDropout


def _plain(module) -> bool:
    return type(module) is torch.nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)


class _LoraDropout(torch.autograd.Function):
    """W x + b + scale * B A (keep * x) for a frozen base (W, b) and trainable A, B.

    `scale` is LoRA's scaling times dropout's 1 / (1 - p), so the mask multiplies by 0 or 1 only.
    Saved for backward: x (which the other projections of the same input share), the uint8 mask and
    h = A (keep * x), r wide; keep * x is formed again for A's gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, keep, scale):
        mult = keep.to(x.dtype)
        h = torch.nn.functional.linear(x * mult, lora_a)
        out = torch.addmm(torch.nn.functional.linear(x, weight, bias), h, lora_b.t(), alpha=scale)
        ctx.save_for_backward(x, weight, lora_a, lora_b, keep, h)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, lora_a, lora_b, keep, h = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        grad_x = grad_a = grad_b = None
        grad_h = grad.mm(lora_b).mul_(ctx.scale)
        mult = keep.to(x.dtype) if (need_x or need_a) else None
        if need_b:
            grad_b = grad.t().mm(h).mul_(ctx.scale)
        if need_a:
            grad_a = grad_h.t().mm(x * mult)
        if need_x:
            grad_x = grad.mm(weight).addcmul_(grad_h.mm(lora_a), mult)
        return grad_x, None, None, grad_a, grad_b, None, None


def _lean_forward(self, x, *args, **kwargs):
    peft_forward = type(self).forward
    if args or kwargs or self.disable_adapters or self.merged or torch.is_autocast_enabled(x.device.type):
        return peft_forward(self, x, *args, **kwargs)
    active = self.active_adapters
    if len(active) != 1 or active[0] not in self.lora_A or active[0] in self.lora_variant:
        return peft_forward(self, x, *args, **kwargs)
    name = active[0]
    base, lora_a, lora_b = self.base_layer, self.lora_A[name], self.lora_B[name]
    if not (_plain(base) and _plain(lora_a) and _plain(lora_b)) or lora_a.bias is not None \
            or lora_b.bias is not None or not x.dtype == base.weight.dtype == lora_a.weight.dtype:
        return peft_forward(self, x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1])
    drop = self.lora_dropout[name]
    if isinstance(drop, FastDropout) and drop.training and flat.device.type == "cpu" \
            and not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad):
        out = _LoraDropout.apply(flat, base.weight, base.bias, lora_a.weight, lora_b.weight, drop.draw_keep(flat),
                                 self.scaling[name] / (1.0 - drop.p))
        return out.view(*x.shape[:-1], out.shape[-1])
    result = torch.nn.functional.linear(flat, base.weight, base.bias)
    h = torch.nn.functional.linear(drop(flat), lora_a.weight)
    out = torch.addmm(result, h, lora_b.weight.t(), alpha=self.scaling[name])
    return out.view(*x.shape[:-1], out.shape[-1])


def use_lean_lora(model) -> int:
    """Give every PEFT LoRA Linear of `model` the lean forward; returns how many were changed."""
    from peft.tuners.lora.layer import Linear

    changed = 0
    for module in model.modules():
        if type(module) is Linear:
            module.forward = types.MethodType(_lean_forward, module)
            changed += 1
    return changed
