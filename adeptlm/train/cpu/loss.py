"""Cross-entropy over the vocabulary with a cheaper backward pass.

torch's cross_entropy backward goes through nll_loss (a zeroed gradient as large as the logits,
with one entry set per row) and then log_softmax's backward, which on CPU costs several times the
forward (bench/RESULTS.md). The gradient of a summed cross-entropy
is softmax(logits) - onehot(target); here it is formed in place in the saved log-probabilities
(exp, one subtraction per row, one scaling), which are not needed afterwards.

head_cross_entropy goes one step further where the head is a plain projection: it computes the
logits itself, so it owns their buffer and takes log_softmax in place, and scales the gradient
after the projection back to the hidden size: one logits-sized buffer instead of two, which
matters most for gemma3-270m's 262,144-wide vocabulary (paired figures: bench/RESULTS.md, "The
head's cross-entropy in one logits-sized buffer").
"""

from __future__ import annotations

import torch


class _SumCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        logp = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, target)
        return -logp.gather(1, target.unsqueeze(1)).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        _spend(ctx, "sum_cross_entropy")
        logp, target = ctx.saved_tensors
        return softmax_minus_onehot_(logp, target).mul_(grad), None


def _spend(ctx, name: str) -> None:
    if getattr(ctx, "consumed", False):
        raise RuntimeError(f"{name}: backward ran twice (retain_graph); its buffer is already spent")
    ctx.consumed = True


def softmax_minus_onehot_(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient of a summed cross-entropy, formed in place in its log-probabilities `logp`
    (which must be a buffer nothing else reads)."""
    g = logp.exp_()
    g[torch.arange(g.shape[0], device=g.device), target] -= 1.0
    return g


def sum_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of rows of `logits` (N x vocab) against class indices `target` (N,).

    Equals F.cross_entropy(logits, target, reduction="sum"), value and gradient. Every row counts:
    select the trained positions first (there is no ignore_index).
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits N x V and target N, got {tuple(logits.shape)} and {tuple(target.shape)}")
    return _SumCrossEntropy.apply(logits, target)


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of (hidden @ weight^T + bias) against `target`, the projection inside.

    The logits are this function's own buffer, so log_softmax overwrites them in place and the
    backward pass forms softmax - onehot in the same buffer: one N x vocab block instead of two
    (the head's output and the log-probabilities) at the step's memory peak. The gradient's scale
    is applied to the small results (N x hidden, vocab x hidden), not to the N x vocab block.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target):
        logits = torch.nn.functional.linear(hidden, weight, bias)
        logp = _log_softmax_in_place(logits)
        ctx.save_for_backward(hidden, weight, logp, target)
        return -logp.gather(1, target.unsqueeze(1)).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        _spend(ctx, "head_cross_entropy")
        hidden, weight, logp, target = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]  # need_b is False where bias is None
        g = softmax_minus_onehot_(logp, target)
        grad_h = g.mm(weight).mul_(grad) if need_h else None
        grad_w = g.t().mm(hidden).mul_(grad) if need_w else None
        grad_b = g.sum(0).mul_(grad) if need_b else None
        return grad_h, grad_w, grad_b, None


def _log_softmax_in_place(x: torch.Tensor) -> torch.Tensor:
    # torch._log_softmax with out= aliasing its input (torch 2.13): the CPU kernel finishes each
    # row's max and sum before writing it, so the result equals log_softmax's to the bit
    # (tests/unit/test_loss.py); 0.025 against 0.141 s for 1,820 x 49,152 here (a scratch timing),
    # as no second block as large as the logits is written
    try:
        return torch._log_softmax(x, -1, False, out=x)
    except (RuntimeError, TypeError, AttributeError):  # a torch that refuses the aliasing
        return torch.log_softmax(x, dim=-1)


def plain_linear(head) -> torch.nn.Linear | None:
    """The nn.Linear that computes `head`'s output, where its forward is exactly that projection:
    the module itself, or the active copy inside PEFT's modules_to_save wrapper (PEFT 0.21.2's
    ModulesToSaveWrapper: one active adapter, not disabled); None for anything else (a LoRA-adapted
    head, hooks, another wrapper)."""
    def plain(m):
        return type(m) is torch.nn.Linear and not (m._forward_hooks or m._forward_pre_hooks)

    if plain(head):
        return head
    saved = getattr(head, "modules_to_save", None)
    if type(head).__name__ != "ModulesToSaveWrapper" or not isinstance(saved, torch.nn.ModuleDict) \
            or head._forward_hooks or head._forward_pre_hooks or head.disable_adapters:
        return None
    active = list(head.active_adapters)
    if len(active) != 1 or active[0] not in saved or not plain(saved[active[0]]):
        return None
    return saved[active[0]]


def head_cross_entropy(hidden: torch.Tensor, head, target: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of head(hidden) (N x vocab) against `target` (N,), equal in value and
    gradient to sum_cross_entropy(head(hidden), target), with one logits-sized block fewer where
    the head is a plain projection in fp32; any other head runs as head(hidden) then sum_cross_entropy."""
    linear = plain_linear(head)
    if linear is None or hidden.dtype != torch.float32 or linear.weight.dtype != torch.float32 \
            or hidden.dim() != 2 or target.shape != hidden.shape[:1]:
        return sum_cross_entropy(head(hidden).float(), target)
    return _HeadCrossEntropy.apply(hidden, linear.weight, linear.bias, target)


# causal LMs whose logits are lm_head(decoder(...)) and nothing more: the head's product can move
# into the loss
PLAIN_HEAD_MODELS = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")


def decoder_and_head(model):
    """(decoder, lm_head) of a causal LM whose logits are lm_head(decoder(...)) and nothing more;
    None otherwise, or when the model is wrapped (DDP) rather than a plain or PEFT model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None or cfg.model_type not in PLAIN_HEAD_MODELS or getattr(cfg, "final_logit_softcapping", None):
        return None
    if not (hasattr(base, "get_decoder") and hasattr(base, "get_output_embeddings")):
        return None
    return base.get_decoder(), base.get_output_embeddings()
