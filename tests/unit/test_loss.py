"""sum_cross_entropy equals torch's summed cross-entropy in value and gradient."""

from __future__ import annotations

import pytest
import torch

from adeptlm.train.loss import sum_cross_entropy


def test_value_and_gradient_equal_torch():
    torch.manual_seed(0)
    logits = (torch.randn(37, 1000) * 4).requires_grad_()
    target = torch.randint(0, 1000, (37,))
    ref = logits.detach().clone().requires_grad_()
    ours = sum_cross_entropy(logits, target)
    theirs = torch.nn.functional.cross_entropy(ref, target, reduction="sum")
    assert torch.allclose(ours, theirs, rtol=1e-6)
    (ours * 0.3).backward()
    (theirs * 0.3).backward()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-7)
    # the gradient flows on to what produced the logits (a head's input)
    h = torch.randn(5, 16, requires_grad=True)
    w = torch.randn(50, 16)
    t = torch.tensor([0, 3, 49, 7, 7])
    sum_cross_entropy(h @ w.t(), t).backward()
    g1 = h.grad.clone()
    h.grad = None
    torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="sum").backward()
    assert torch.allclose(g1, h.grad, atol=1e-5)


def test_shapes_are_checked_and_a_second_backward_is_refused():
    with pytest.raises(ValueError):
        sum_cross_entropy(torch.randn(4, 10), torch.zeros(3, dtype=torch.long))
    logits = torch.randn(4, 10, requires_grad=True)
    loss = sum_cross_entropy(logits, torch.tensor([1, 2, 3, 4]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError):
        loss.backward()
