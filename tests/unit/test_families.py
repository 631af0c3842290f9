"""The family matrix: for each family users fine-tune (Llama-3, Llama-3.1/3.2 with llama3 rope scaling,
Llama-2, Mistral, Qwen2.5, Qwen3, Gemma 3), a tiny random model of that family is trained with LoRA by
`adept sft`, merged by `adept merge` (checked against PEFT), exported by `adept export gguf` as f16 and
q8_0, and loaded in llama.cpp: same token ids as transformers on the check's sample, same logits within
the stated tolerance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adeptlm.cli import main
from adeptlm.export.check import TOKENIZER_SAMPLE
from adeptlm.export.gguf import FAMILIES, export_gguf, llama3_rope_factors
from adeptlm.merge import merge
from adeptlm.runrecord import read_run
from conftest import run_adept
from families import LLAMA3_ROPE, TINY_FAMILIES, build_family

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
gguf = pytest.importorskip("gguf")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECORDS = [
    {"instruction": "What is two plus two?", "input": "", "output": "Two plus two is four."},
    {"instruction": "北京是哪个国家的首都？", "input": "", "output": "北京是中华人民共和国的首都。"},
    {"instruction": "Who are you?", "input": "", "output": "You are a helpful assistant."},
    {"instruction": "Write code", "input": "add", "output": "def add(a, b):\n    return a + b"},
]
PROMPTS = ["The quick brown fox jumps over the lazy dog. Hello world, hello there!",
           "北京是中华人民共和国的首都。大型语言模型在考试上的表现如何？", "def add(a, b):\n    return a + b"]
# Logits of llama.cpp against transformers, as a fraction of the largest |logit| at that position.
# f16: weights rounded to 11 significant bits, and ggml rounds each activation row to f16 for the dot
# products and keeps the key/value cache in f16 (relative error about 2^-11 per product); the largest
# seen over these families was 0.0019. q8_0: ggml quantizes both the weights and each activation row to
# 8 bits per block of 32 with one scale, and in these 32-wide models every row is a single block; the
# largest seen was 0.050 (Llama-3.1, Chinese prompt). The bounds are about 2.5x and 2x those.
TOLERANCE = {"f16": 0.005, "q8_0": 0.1}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].numpy()


def f32_file_and_logits(tmp_path, model, tok, ids):
    """Export MODEL as f32; the file and llama.cpp's last-position logits for IDS."""
    from adeptlm.backends import LlamaCppBackend

    d = tmp_path / "m"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    path = export_gguf(str(d), tmp_path / "m.gguf", "f32", progress=False).path
    backend = LlamaCppBackend(path, tok, n_ctx=128)
    try:
        return path, backend.next_logits(ids)
    finally:
        backend.close()


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_family_trains_merges_and_exports_to_llama_cpp(tmp_path, family):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adeptlm.backends import LlamaCppBackend

    model, tok = build_family(family)
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)

    # LoRA SFT: the loss is finite and falls; only LoRA matrices of the asked projections are saved
    out = tmp_path / "sft"
    assert main(["sft", "--model_name_or_path", str(base), "--output_dir", str(out), "--dataset_dir",
                 str(write_jsonl(tmp_path / "train.jsonl", RECORDS)), "--max_steps", "12",
                 "--per_device_train_batch_size", "2", "--learning_rate", "3e-2", "--lr_scheduler_type", "constant",
                 "--logging_steps", "1", "--report_to", "none", "--save_steps", "1000", "--lora_dropout", "0",
                 "--seed", "1", "--lora_rank", "4", "--lora_alpha", "8", "--trainable", ",".join(TARGETS)]) == 0
    hist = [h["loss"] for h in read_run(out)["metrics"]["loss_history"]]
    assert np.isfinite(hist).all() and np.mean(hist[-3:]) < np.mean(hist[:3]) - 0.3, hist
    adapter = load_file(out / "adapter_model.safetensors")
    assert all("lora_A" in k or "lora_B" in k for k in adapter)
    assert {k.split(".")[-3] for k in adapter} == set(TARGETS)

    # adept merge gives PEFT's logits
    ids = tok(PROMPTS[0])["input_ids"]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    merged_dir = merge(str(base), [str(out)], tmp_path / "merged", progress=False)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    with torch.no_grad():
        torch.testing.assert_close(merged(torch.tensor([ids])).logits, peft(torch.tensor([ids])).logits,
                                   atol=1e-5, rtol=1e-5)

    # adept export gguf: llama.cpp tokenizes as transformers and computes the same logits
    for outtype, tol in TOLERANCE.items():
        path = export_gguf(str(merged_dir), tmp_path / f"{family}-{outtype}.gguf", outtype, progress=False).path
        backend = LlamaCppBackend(path, tok, n_ctx=256)
        try:
            for text in TOKENIZER_SAMPLE:
                want = tok(text, add_special_tokens=False)["input_ids"]
                assert backend.llm.tokenize(text.encode(), add_bos=False, special=True) == want, (outtype, text)
            for text in PROMPTS:
                ids = tok(text)["input_ids"]
                want, got = hf_logits(merged, ids), backend.next_logits(ids)
                err = np.abs(got - want).max() / np.abs(want).max()
                assert err < tol, (outtype, text, err)
                assert int(np.argmax(got)) == int(np.argmax(want)) or err < tol / 5, (outtype, text)
        finally:
            backend.close()


def test_llama3_rope_factors_equal_transformers_and_matter(tmp_path):
    """The rope_freqs divisors equal transformers' own llama3 frequencies, and leaving them out would
    show: the same weights with default rope give different logits (so the matrix test can fail)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model, tok = build_family("llama3.1")
    inv_default = 1.0 / 10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    inv_llama3, _ = ROPE_INIT_FUNCTIONS["llama3"](model.config, "cpu")
    factors = llama3_rope_factors(LLAMA3_ROPE, 8)
    np.testing.assert_allclose(inv_default.numpy() / factors, inv_llama3.numpy(), rtol=1e-6)
    assert len(set(np.round(factors, 4))) == 3            # all three bands are exercised

    ids = tok(PROMPTS[0])["input_ids"]
    path, got = f32_file_and_logits(tmp_path, model, tok, ids)
    names = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    np.testing.assert_array_equal(np.asarray(names["rope_freqs.weight"].data), factors)
    plain, _ = build_family("llama3.1", rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    plain.load_state_dict(model.state_dict())
    want, wrong = hf_logits(model, ids), hf_logits(plain, ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-3
    assert np.abs(wrong - want).max() / np.abs(want).max() > 10 * TOLERANCE["f16"]


def test_unsupported_settings_stop_before_writing(tmp_path):
    """A rope type, sliding window or architecture the exporter does not handle: exit 2, one line naming
    it and what is supported, nothing at the output path."""
    cases = {
        "yarn": ("qwen3", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                               "original_max_position_embeddings": 64}}, "rope type 'yarn'"),
        "qwen-window": ("qwen2.5", {"use_sliding_window": True, "sliding_window": 32}, "use_sliding_window"),
    }
    for name, (family, overrides, words) in cases.items():
        model, tok = build_family(family, **overrides)
        d = tmp_path / name
        model.save_pretrained(d)
        tok.save_pretrained(d)
        target = tmp_path / f"{name}.gguf"
        rc = run_adept("export", "gguf", "--model", str(d), "--output", str(target))
        assert rc.returncode == 2, rc.stderr
        lines = rc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "supported" in lines[0], lines
        assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}")]


def test_mistral_sliding_window_caps_the_stated_context(tmp_path):
    model, tok = build_family("mistral", sliding_window=32)
    d = tmp_path / "m"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    path = export_gguf(str(d), tmp_path / "m.gguf", "f16", progress=False).path
    assert gguf.GGUFReader(str(path)).fields["llama.context_length"].contents() == 32


def test_help_lists_the_families():
    rc = run_adept("export", "gguf", "--help")
    text = " ".join(rc.stdout.split())
    for fam in FAMILIES:
        assert f"{fam.name} ({fam.architecture})" in text


def test_linear_rope_scaling_is_written(tmp_path):
    model, tok = build_family("llama3", rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})
    ids = tok(PROMPTS[0])["input_ids"]
    path, got = f32_file_and_logits(tmp_path, model, tok, ids)
    assert gguf.GGUFReader(str(path)).fields["llama.rope.scaling.type"].contents() == "linear"
    want = hf_logits(model, ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-3


def test_other_architectures_go_through_llama_cpps_converter(tmp_path, llama_cpp_converter):
    """Mixtral is not in adept's matrix: adept's exporter stops with one line pointing at --converter and
    leaves nothing; with --converter, llama.cpp's own script writes the file (f16 directly, q4_0 through
    llama.cpp's quantizer), llama.cpp runs it with transformers' logits, and `adept export check` reads it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from adeptlm.backends import LlamaCppBackend
    from families import build_family_tokenizer

    tok = build_family_tokenizer("spm-prefix")
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("mixtral", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=256, initializer_range=0.2,
                               sliding_window=None)
    model = AutoModelForCausalLM.from_config(cfg)
    d = tmp_path / "mixtral"
    model.save_pretrained(d)
    tok.save_pretrained(d)

    target = tmp_path / "mixtral.gguf"
    rc = run_adept("export", "gguf", "--model", str(d), "--output", str(target))
    lines = rc.stderr.strip().splitlines()
    assert rc.returncode == 2 and len(lines) == 1 and "MixtralForCausalLM" in lines[0] and "--converter" in lines[0]
    assert list(tmp_path.glob("*.gguf")) == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    rc = run_adept("export", "gguf", "--model", str(d), "--output", str(target), "--converter",
                   str(llama_cpp_converter))
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert "adept export check" in rc.stdout
    backend = LlamaCppBackend(target, tok, n_ctx=256)
    try:
        for text in PROMPTS:
            ids = tok(text)["input_ids"]
            want = hf_logits(model, ids)
            assert np.abs(backend.next_logits(ids) - want).max() / np.abs(want).max() < TOLERANCE["f16"], text
    finally:
        backend.close()
    rc = run_adept("export", "check", "--model", str(d), "--gguf", str(target), "--tokens", "4")
    assert rc.returncode == 0, rc.stderr[-2000:]
    report = json.loads((tmp_path / "mixtral-check" / "check.json").read_text())
    assert report["gguf"] == str(target) and report["tokenization_texts"] == len(TOKENIZER_SAMPLE)

    q4 = tmp_path / "mixtral-q4_0.gguf"
    rc = run_adept("export", "gguf", "--model", str(d), "--output", str(q4), "--outtype", "q4_0", "--converter",
                   str(llama_cpp_converter))
    assert rc.returncode == 0, rc.stderr[-2000:]
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(q4)).tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q4_0", kinds
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    rc = run_adept("export", "gguf", "--model", str(d), "--output", str(target), "--converter", str(tmp_path))
    assert rc.returncode == 2 and "convert_hf_to_gguf.py" in rc.stderr
