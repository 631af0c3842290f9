"""sum_cross_entropy equals torch's summed cross-entropy in value and gradient."""

from __future__ import annotations

import pytest
import torch

from adeptlm.train.cpu.loss import sum_cross_entropy


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


@pytest.mark.parametrize("bias", [False, True])
def test_head_cross_entropy_equals_the_head_then_torch(bias):
    from adeptlm.train.cpu.loss import head_cross_entropy

    torch.manual_seed(1)
    head = torch.nn.Linear(16, 300, bias=bias)
    h = (torch.randn(23, 16) * 3).requires_grad_()
    t = torch.randint(0, 300, (23,))
    ours = head_cross_entropy(h, head, t)
    (ours * 0.7).backward()
    got = [h.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    h.grad = None
    head.zero_grad(set_to_none=True)
    theirs = torch.nn.functional.cross_entropy(head(h), t, reduction="sum")
    (theirs * 0.7).backward()
    want = [h.grad] + [p.grad for p in head.parameters()]
    assert torch.allclose(ours, theirs, rtol=1e-6)
    assert len(got) == len(want) == 2 + bias
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_log_softmax_in_place_is_torchs_to_the_bit():
    from adeptlm.train.cpu.loss import _log_softmax_in_place

    x = torch.randn(67, 5003) * 6
    want = torch.log_softmax(x, dim=-1)
    buf = x.clone()
    got = _log_softmax_in_place(buf)
    assert got.data_ptr() == buf.data_ptr()  # no second buffer
    assert torch.equal(got, want)


def test_head_cross_entropy_finds_the_trained_copy_of_a_saved_head_and_leaves_lora_heads_to_peft():
    from peft import LoraConfig, get_peft_model

    from adeptlm.train.cpu.loss import head_cross_entropy, plain_linear

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(8, 8)
            self.lm_head = torch.nn.Linear(8, 40, bias=False)

        def forward(self, x):
            return self.lm_head(self.body(x))

    torch.manual_seed(2)
    h = torch.randn(9, 8)
    t = torch.randint(0, 40, (9,))
    saved = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["body"], modules_to_save=["lm_head"]))
    wrapper = saved.base_model.model.lm_head
    copy = plain_linear(wrapper)
    assert copy is not None and copy.weight.requires_grad and copy is not wrapper.original_module
    with torch.no_grad():
        copy.weight.mul_(1.5)  # the trained copy now differs from the original
    loss = head_cross_entropy(h, wrapper, t)
    loss.backward()
    want = torch.nn.functional.cross_entropy(wrapper(h), t, reduction="sum")
    assert torch.allclose(loss, want, rtol=1e-6) and copy.weight.grad is not None
    lora = get_peft_model(Tiny(), LoraConfig(r=2, target_modules=["lm_head"]))
    assert plain_linear(lora.base_model.model.lm_head) is None  # runs PEFT's forward, then the loss
    got = head_cross_entropy(h, lora.base_model.model.lm_head, t)
    want = torch.nn.functional.cross_entropy(lora.base_model.model.lm_head(h), t, reduction="sum")
    assert torch.allclose(got, want, rtol=1e-6)
