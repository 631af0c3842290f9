"""The lean LoRA forward gives PEFT's outputs and gradients, and steps aside where it does not apply."""

from __future__ import annotations

import torch

from adeptlm.train.cpu.dropout import use_fast_dropout
from adeptlm.train.cpu.lorafast import use_lean_lora

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft_model(model_dir, dropout=0.1):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS,
                                      task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter matter
            torch.nn.init.normal_(p, std=0.1)
    return model


def _run(model, ids):
    torch.manual_seed(5)  # same dropout masks for both forwards
    model.zero_grad()
    logits = model(input_ids=ids).logits
    logits.pow(2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_same_outputs_and_gradients_as_peft(tiny_model_dir):
    model = _peft_model(tiny_model_dir)
    use_fast_dropout(model)
    model.train()
    ids = torch.randint(0, 100, (2, 17))
    ref_out, ref_grads = _run(model, ids)
    assert use_lean_lora(model) == len(TARGETS) * model.config.num_hidden_layers
    out, grads = _run(model, ids)
    # with dropout the lean path folds 1 / (1 - p) into LoRA's scaling: the same arithmetic, rounded
    # in another order (differences of a few 1e-6 on logits of size ~4)
    assert torch.allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-7), name
    model.eval()  # eval: dropout off, same as PEFT's
    with torch.no_grad():
        lean = model(input_ids=ids).logits
        for m in model.modules():
            m.__dict__.pop("forward", None)
        assert torch.allclose(lean, model(input_ids=ids).logits, atol=1e-6)


def test_disabled_merged_and_two_adapters_take_peft_path(tiny_model_dir):
    from peft import LoraConfig

    model = _peft_model(tiny_model_dir, dropout=0.0).eval()
    ids = torch.randint(0, 100, (1, 9))
    use_lean_lora(model)
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            without = model(input_ids=ids).logits
        model.merge_adapter()
        merged = model(input_ids=ids).logits
        model.unmerge_adapter()
        assert not torch.allclose(with_adapter, without)
        assert torch.allclose(merged, with_adapter, atol=1e-5)
        # a second adapter that is active alongside the first: both must count, as in PEFT
        model.add_adapter("other", LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
        for name, p in model.named_parameters():
            if "lora_B.other" in name:
                torch.nn.init.normal_(p, std=0.1)
        model.base_model.set_adapter(["default", "other"])
        both = model(input_ids=ids).logits
        for m in model.modules():
            m.__dict__.pop("forward", None)
        assert torch.allclose(both, model(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(both, with_adapter)


def _saved_bytes(model, ids) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for one training forward."""
    kept = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(5)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids).logits.pow(2).mean()
    loss.backward()
    return sum(kept.values())


def test_dropout_path_keeps_no_copy_of_the_dropped_input(tiny_model_dir):
    model = _peft_model(tiny_model_dir)
    use_fast_dropout(model)
    model.train()
    ids = torch.randint(0, 100, (2, 17))
    stock = _saved_bytes(model, ids)
    use_lean_lora(model)
    lean = _saved_bytes(model, ids)
    layer = model.get_base_model().model.layers[0]
    inputs = sum(getattr(layer.self_attn if t[0] in "qkvo" else layer.mlp, t).in_features for t in TARGETS)
    # PEFT's path keeps x * mask / (1 - p) for each adapted projection (fp32, every token); the lean
    # path keeps none of them
    dropped_inputs = ids.numel() * inputs * model.config.num_hidden_layers * 4
    assert stock - lean >= dropped_inputs
