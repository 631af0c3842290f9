"""A leaner forward for PEFT's LoRA Linear layers.

PEFT computes `result + lora_B(lora_A(dropout(x))) * scaling`: after the B matmul, one pass over the
layer's whole output to scale it and another to add it, each writing a new tensor as large as the
output. torch.addmm(result, h, B^T, alpha=scaling) does both inside the matrix multiply. The
arithmetic is the same (the backward pass scales only the r-wide gradients). Only the plain case
takes this path: one active adapter, not merged, no DoRA or other variant, plain nn.Linear modules
without hooks, no autocast, one dtype; anything else runs PEFT's own forward.
"""

from __future__ import annotations

import types

import torch


def _plain(module) -> bool:
    return type(module) is torch.nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)


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
    result = torch.nn.functional.linear(flat, base.weight, base.bias)
    h = torch.nn.functional.linear(self.lora_dropout[name](flat), lora_a.weight)
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
