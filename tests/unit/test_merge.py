"""adept merge against PEFT: logits equal PEFT's unmerged base + adapter, weights equal PEFT's
merge_and_unload(), for llama, qwen2 and gemma3 and every base checkpoint layout."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from adeptlm.errors import AdeptError
from adeptlm.merge import merge
from conftest import build_tiny_model, run_adept

PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INPUT = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64, 128, 31]])


def save_base(model, tok, path, layout: str):
    """Write a base checkpoint in one of the layouts transformers and older tools produce."""
    if layout == "single":
        model.save_pretrained(path)
    elif layout == "sharded":
        model.save_pretrained(path, max_shard_size="20KB")
        assert (path / "model.safetensors.index.json").is_file()
    else:
        model.save_pretrained(path)
        (path / "model.safetensors").unlink()
        state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"
                 or not model.config.tie_word_embeddings}
        if layout == "bin":
            torch.save(state, path / "pytorch_model.bin")
        else:                                   # sharded .bin with its index
            names = sorted(state)
            half = len(names) // 2
            parts = {"pytorch_model-00001-of-00002.bin": names[:half],
                     "pytorch_model-00002-of-00002.bin": names[half:]}
            for fname, keys in parts.items():
                torch.save({k: state[k] for k in keys}, path / fname)
            index = {"metadata": {}, "weight_map": {k: f for f, ks in parts.items() for k in ks}}
            (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    tok.save_pretrained(path)


def make_adapter(base_dir, path, seed, modules_to_save=None, targets=PROJ, **cfg):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=modules_to_save,
                        init_lora_weights=False, ensure_weight_tying=bool(modules_to_save), **cfg)
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    peft.save_pretrained(path)
    return path


def peft_logits_and_merged(base_dir, adapters):
    """PEFT's logits with the adapters applied unmerged in turn, and its merge_and_unload() weights."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    for i, ad in enumerate(adapters):
        model = PeftModel.from_pretrained(model, ad)
        if i < len(adapters) - 1:
            model = model.merge_and_unload()
    with torch.no_grad():
        logits = model(INPUT).logits
    merged = model.merge_and_unload()
    return logits, {k: v.detach().clone() for k, v in merged.state_dict().items()}


def check_against_peft(base_dir, adapters, out):
    logits, state = peft_logits_and_merged(base_dir, adapters)
    ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        our_logits = ours(INPUT).logits
    torch.testing.assert_close(our_logits, logits, atol=1e-5, rtol=1e-5)
    our_state = ours.state_dict()
    assert set(our_state) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(our_state[k], v, atol=1e-6, rtol=1e-6, msg=k)
    return ours


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("layout", ["single", "sharded", "bin", "bin-sharded"])
def test_merge_equals_peft(tmp_path, tiny_tokenizer, arch, layout):
    base = tmp_path / "base"
    save_base(build_tiny_model(arch, len(tiny_tokenizer)), tiny_tokenizer, base, layout)
    adapter = make_adapter(base, tmp_path / "lora", seed=1, modules_to_save=["embed_tokens", "lm_head"])
    out = merge(str(base), [str(adapter)], tmp_path / "merged", progress=False)
    ours = check_against_peft(base, [adapter], out)
    # tied embeddings with modules_to_save on both sides stay tied and equal
    assert ours.config.tie_word_embeddings
    assert torch.equal(ours.get_input_embeddings().weight, ours.get_output_embeddings().weight)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", "run.json"} <= files
    assert not any(f.endswith(".bin") for f in files)
    if layout.endswith("sharded"):
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1 and all((out / s).is_file() for s in shards)
        size = 0
        for s in shards:
            with safe_open(str(out / s), "pt") as f:
                assert f.metadata() == {"format": "pt"}
                size += sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
        assert index["metadata"]["total_size"] == size


def test_several_adapters_in_order_and_rslora_rank_pattern(tmp_path, tiny_tokenizer):
    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)), tiny_tokenizer, base, "sharded")
    a = make_adapter(base, tmp_path / "a", seed=2, use_rslora=True, rank_pattern={"v_proj": 2},
                     alpha_pattern={"o_proj": 3})
    b = make_adapter(base, tmp_path / "b", seed=3, modules_to_save=["embed_tokens", "lm_head"],
                     targets=["q_proj", "down_proj"])
    rc = run_adept("merge", "--base_model", str(base), "--lora_model", f"{a},{b}", "--output_dir",
                   str(tmp_path / "merged"))
    assert rc.returncode == 0, rc.stderr
    check_against_peft(base, [a, b], tmp_path / "merged")


def test_lora_on_tied_lm_head_unties_instead_of_losing_it(tmp_path, tiny_tokenizer):
    """A LoRA on lm_head of a tied model changes the output side only; the merge keeps that."""
    base = tmp_path / "base"
    save_base(build_tiny_model("qwen2", len(tiny_tokenizer)), tiny_tokenizer, base, "single")
    ad = make_adapter(base, tmp_path / "lora", seed=4, targets=["q_proj", "lm_head"])
    out = merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, ad)
    with torch.no_grad():
        want = peft(INPUT).logits
        ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        torch.testing.assert_close(ours(INPUT).logits, want, atol=1e-5, rtol=1e-5)
    assert ours.config.tie_word_embeddings is False
    assert not torch.equal(ours.get_input_embeddings().weight, ours.get_output_embeddings().weight)


def test_bf16_base_stays_bf16_and_matches_fp32_arithmetic(tmp_path, tiny_tokenizer):
    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)).to(torch.bfloat16), tiny_tokenizer, base, "single")
    ad = make_adapter(base, tmp_path / "lora", seed=5, modules_to_save=["embed_tokens", "lm_head"])
    out = merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    a_state = {}
    with safe_open(str(ad / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():
            a_state[k] = f.get_tensor(k)
    with safe_open(str(base / "model.safetensors"), "pt") as fb, safe_open(str(out / "model.safetensors"), "pt") as fo:
        assert {fo.get_tensor(k).dtype for k in fo.keys()} == {torch.bfloat16}
        w = fb.get_tensor("model.layers.0.self_attn.q_proj.weight")
        pre = "base_model.model.model.layers.0.self_attn.q_proj."
        want = (w.float() + a_state[pre + "lora_B.weight"].float() @ a_state[pre + "lora_A.weight"].float() * 2.0)
        assert torch.equal(fo.get_tensor("model.layers.0.self_attn.q_proj.weight"), want.to(torch.bfloat16))
        # modules_to_save keep the base dtype (the seed cast them to fp16)
        emb = a_state["base_model.model.model.embed_tokens.weight"]
        assert torch.equal(fo.get_tensor("model.embed_tokens.weight"), emb.to(torch.bfloat16))


def test_vocab_mismatch_is_one_clear_line(tmp_path, tiny_tokenizer):
    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)), tiny_tokenizer, base, "single")
    ad = make_adapter(base, tmp_path / "lora", seed=6, modules_to_save=["embed_tokens", "lm_head"])
    from safetensors.torch import load_file, save_file
    state = load_file(str(ad / "adapter_model.safetensors"))
    for k in list(state):
        if k.endswith(("embed_tokens.weight", "lm_head.weight")):
            state[k] = torch.cat([state[k], torch.zeros(8, state[k].shape[1])])
    save_file(state, str(ad / "adapter_model.safetensors"))
    rc = run_adept("merge", "--base_model", str(base), "--lora_model", str(ad), "--output_dir", str(tmp_path / "o"))
    assert rc.returncode == 2
    lines = rc.stderr.strip().splitlines()
    assert len(lines) == 1 and "vocabulary size mismatch" in lines[0] and str(ad) in lines[0], rc.stderr
    assert not (tmp_path / "o").exists()


def test_adapter_from_another_base_is_refused(tmp_path, tiny_tokenizer):
    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)), tiny_tokenizer, base, "single")
    other = tmp_path / "other"
    wider = build_tiny_model("llama", len(tiny_tokenizer))
    wider.config.intermediate_size = 48                   # same names, other MLP shapes
    save_base(AutoModelForCausalLM.from_config(wider.config), tiny_tokenizer, other, "single")
    ad = make_adapter(other, tmp_path / "lora", seed=7)
    with pytest.raises(AdeptError, match="another base"):
        merge(str(base), [str(ad)], tmp_path / "o", progress=False)


def test_interrupted_merge_leaves_nothing_that_looks_finished(tmp_path, tiny_tokenizer, monkeypatch):
    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)), tiny_tokenizer, base, "sharded")
    ad = make_adapter(base, tmp_path / "lora", seed=8)
    from adeptlm import merge as merge_mod
    calls = {"n": 0}
    real = merge_mod.ShardWriter.write

    def failing(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(self, name, tensor)

    monkeypatch.setattr(merge_mod.ShardWriter, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    assert list(tmp_path.glob("*merged*")) == []
    monkeypatch.setattr(merge_mod.ShardWriter, "write", real)
    # an existing output is refused unless --overwrite, and replaced whole with it
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("x")
    with pytest.raises(AdeptError, match="--overwrite"):
        merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    out = merge(str(base), [str(ad)], tmp_path / "merged", overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "run.json").is_file()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_tokenizer, monkeypatch):
    """ENOSPC injected into the shard writer mid-merge: one line naming the output, no partial
    directory; and a filesystem reported too small is refused before anything is written."""
    import errno
    from collections import namedtuple

    from adeptlm import atomic
    from adeptlm import merge as merge_mod

    base = tmp_path / "base"
    save_base(build_tiny_model("llama", len(tiny_tokenizer)), tiny_tokenizer, base, "sharded")
    ad = make_adapter(base, tmp_path / "lora", seed=8)
    real = merge_mod.ShardWriter.write
    calls = {"n": 0}

    def full(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, tensor)

    monkeypatch.setattr(merge_mod.ShardWriter, "write", full)
    with pytest.raises(AdeptError) as err:
        merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    assert "\n" not in str(err.value) and str(tmp_path / "merged") in str(err.value)
    assert "disk filled up" in str(err.value) and "No space left on device" in str(err.value)
    assert list(tmp_path.glob("*merged*")) == []
    monkeypatch.setattr(merge_mod.ShardWriter, "write", real)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(AdeptError, match=r"not enough disk space: about .* needed, 0.0 MiB free"):
        merge(str(base), [str(ad)], tmp_path / "merged", progress=False)
    assert list(tmp_path.glob("*merged*")) == []
