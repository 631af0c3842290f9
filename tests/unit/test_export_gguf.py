"""adept export gguf on tiny random llama, qwen2 and gemma3 models: the file loads in llama.cpp and
gives transformers' tokens, logits and greedy continuations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adeptlm.errors import AdeptError
from adeptlm.export.gguf import export_gguf, pre_tokenizer_name
from conftest import build_tiny_model, run_adept

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
gguf = pytest.importorskip("gguf")

TEXT = "Hello world, the quick brown fox jumps over the lazy dog."


def save(tmp_path, arch, tok, name=None, **kw):
    model = build_tiny_model(arch, len(tok), **kw)
    d = tmp_path / (name or arch)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return model, d


def greedy_hf(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_f32_export_matches_transformers(tmp_path, tiny_tokenizer, arch):
    from adeptlm.backends import LlamaCppBackend

    model, d = save(tmp_path, arch, tiny_tokenizer)
    result = export_gguf(str(d), tmp_path / f"{arch}.gguf", "f32", progress=False)
    assert result.arch == arch and result.pre == "gpt-2"
    backend = LlamaCppBackend(result.path, tiny_tokenizer, n_ctx=128)
    try:
        ids = tiny_tokenizer(TEXT)["input_ids"]
        assert backend.llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
        logits = backend.next_logits(ids)
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0, -1].numpy()
        # llama.cpp keeps its key/value cache in f16: agreement to a few thousandths, not bit for bit
        assert np.abs(logits - want).max() < 2e-2
        assert backend.generate([ids], 16, stop_ids=[])[0] == greedy_hf(model, ids, 16)
    finally:
        backend.close()
    reader = gguf.GGUFReader(str(result.path))
    fields = reader.fields
    assert fields["general.architecture"].contents() == arch
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tiny_tokenizer.eos_token_id
    assert fields["tokenizer.ggml.eot_token_id"].contents() == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.chat_template"].contents() == tiny_tokenizer.chat_template
    types = fields["tokenizer.ggml.token_type"].contents()
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert types[im_end] == int(gguf.TokenType.CONTROL) and types[300] == int(gguf.TokenType.NORMAL)


# the type each weight matrix gets (rows 256 wide, so every block size fits) and how far the GGUF's
# next-token logits may lie from transformers' (normalised squared error). Measured on this test's model
# (2026-12-04, llama-cpp-python 0.3.36): f16 1.8e-6, bf16 8.6e-5, q8_0 1.0e-3, q4_0 0.085, q4_1 0.086,
# q5_0 0.025, q5_1 0.015, q4_k_m 0.069 (llama.cpp also rounds the activations to 8 bits in quantised
# products); the bounds are about three times those
QUANTS = {"f16": ("F16", 1e-5), "bf16": ("BF16", 5e-4), "q8_0": ("Q8_0", 5e-3), "q4_0": ("Q4_0", 0.25),
          "q4_1": ("Q4_1", 0.25), "q5_0": ("Q5_0", 0.08), "q5_1": ("Q5_1", 0.05), "q4_k_m": ("Q4_K", 0.2)}


@pytest.mark.parametrize("outtype", list(QUANTS))
def test_every_outtype_loads_and_is_typed(tmp_path, tiny_tokenizer, outtype):
    from adeptlm.backends import LlamaCppBackend

    model, d = save(tmp_path, "llama", tiny_tokenizer, name="wide", hidden_size=256)
    path = export_gguf(str(d), tmp_path / "m.gguf", outtype, progress=False).path
    reader = gguf.GGUFReader(str(path))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == "F32"
    want, tolerance = QUANTS[outtype]
    assert kinds["blk.0.attn_q.weight"] == want and kinds["blk.1.ffn_up.weight"] == want, kinds
    ids = tiny_tokenizer(TEXT)["input_ids"]
    backend = LlamaCppBackend(path, tiny_tokenizer, n_ctx=64)
    try:
        got = backend.next_logits(ids)
    finally:
        backend.close()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0, -1].numpy()
    nmse = float(((got - ref) ** 2).sum() / (ref ** 2).sum())
    assert nmse < tolerance, (outtype, nmse)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pre_tokenizer_names():
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                     {"type": "ByteLevel", "use_regex": True}]}
    assert pre_tokenizer_name({"pre_tokenizer": digits}) == "smollm"
    from adeptlm.export.gguf import LLAMA3_SPLIT, QWEN2_SPLIT
    for regex, name in ((LLAMA3_SPLIT, "llama-bpe"), (QWEN2_SPLIT, "qwen2")):
        pre = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": regex}},
                                                     {"type": "ByteLevel", "use_regex": False}]}
        assert pre_tokenizer_name({"pre_tokenizer": pre}) == name
    with pytest.raises(AdeptError, match="--pretokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})


def test_unsupported_inputs_are_one_line(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("gpt2", vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2)
    d = tmp_path / "gpt2"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    rc = run_adept("export", "gguf", "--model", str(d), "--output", str(tmp_path / "x.gguf"))
    assert rc.returncode == 2 and len(rc.stderr.strip().splitlines()) == 1 and "architecture" in rc.stderr
    assert not (tmp_path / "x.gguf").exists()

    _, base = save(tmp_path, "llama", tiny_tokenizer, "base")
    from peft import LoraConfig, get_peft_model
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    rc = run_adept("export", "gguf", "--model", str(tmp_path / "adapter"), "--output", str(tmp_path / "x.gguf"))
    assert rc.returncode == 2 and "adept merge" in rc.stderr, rc.stderr


def test_interrupted_export_leaves_no_file(tmp_path, tiny_tokenizer, monkeypatch):
    _, d = save(tmp_path, "qwen2", tiny_tokenizer)
    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def failing(self, tensor, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, tensor, *a, **k)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(str(d), tmp_path / "out.gguf", "q8_0", progress=False)
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []


@pytest.mark.parametrize("arch,dummy_prefix", [("gemma3", False), ("llama", True)])
def test_sentencepiece_style_tokenizer_round_trip(tmp_path, arch, dummy_prefix):
    """Gemma-style (no dummy prefix) and Llama-2-style ("▁" before the text) byte-fallback BPE: llama.cpp
    reads the exported vocabulary, scores and types and tokenizes the check's sample (Chinese, emoji,
    code, whitespace runs; characters outside the vocabulary go to byte tokens) as transformers does."""
    from adeptlm.backends import LlamaCppBackend
    from adeptlm.export.check import TOKENIZER_SAMPLE
    from adeptlm.templates import GEMMA
    from conftest import build_spm_tokenizer

    tok = build_spm_tokenizer(dummy_prefix, GEMMA)
    model, d = save(tmp_path, arch, tok)
    result = export_gguf(str(d), tmp_path / "spm.gguf", "f32", progress=False)
    fields = gguf.GGUFReader(str(result.path)).fields
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert bool(fields["tokenizer.ggml.add_space_prefix"].contents()) is dummy_prefix
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[tok.convert_tokens_to_ids("<0x41>")] == int(gguf.TokenType.BYTE)
    assert types[tok.convert_tokens_to_ids("<end_of_turn>")] == int(gguf.TokenType.CONTROL)
    assert types[tok.unk_token_id] == int(gguf.TokenType.UNKNOWN)
    backend = LlamaCppBackend(result.path, tok, n_ctx=256)
    try:
        sample = TOKENIZER_SAMPLE + ["繁體中文：臺灣的學校。", "全角标点：，。！？【】（）", "a  b   c    d"]
        byte_fallback = 0
        for text in sample:
            want = tok(text, add_special_tokens=False)["input_ids"]
            assert backend.llm.tokenize(text.encode(), add_bos=False, special=True) == want, text
            byte_fallback += any(types[i] == int(gguf.TokenType.BYTE) for i in want)
        assert byte_fallback >= 3  # the sample does reach the byte tokens
        ids = tok("北京是中华人民共和国的首都。")["input_ids"]
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0, -1].numpy()
        assert np.abs(backend.next_logits(ids) - want).max() < 2e-2
        assert backend.generate([ids], 12, stop_ids=[])[0] == greedy_hf(model, ids, 12)
    finally:
        backend.close()


def test_logit_parity_statistics_against_the_formulas():
    import math

    import torch

    from adeptlm.export.check import _LogitStats

    same = _LogitStats()
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    same.add(x, x.clone())
    r = same.result()
    assert r["mean_kl"] == pytest.approx(0.0, abs=1e-7) and r["nmse"] == 0.0 and r["same_top"] == 1.0
    assert r["verdict"].startswith("within the f16-like")
    moved = _LogitStats()
    h, g = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.75]]))
    moved.add(h, g)
    r = moved.result()
    assert r["mean_kl"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)
    assert r["nmse"] == pytest.approx(float(((g - h) ** 2).sum() / (h ** 2).sum()), rel=1e-6)
    assert r["verdict"].startswith("ABOVE")


def test_chat_on_a_gguf_with_a_system_prompt_answers_as_the_hf_model(tmp_path, tiny_tokenizer):
    """`adept chat FILE.gguf --system ...` from its command line: the llama.cpp side of chat, with the
    system turn, answers each line as the transformers model it was exported from does (greedy, f32)."""
    _, d = save(tmp_path, "llama", tiny_tokenizer)
    path = export_gguf(str(d), tmp_path / "m.gguf", "f32", progress=False).path
    flags = ["--max_tokens", "6", "--temperature", "0", "--system", "You answer in one word."]
    lines = "hello\nthe quick brown fox\n"
    gg = run_adept("chat", str(path), *flags, input=lines, timeout=300)
    hf = run_adept("chat", str(d), *flags, input=lines, timeout=300)
    assert gg.returncode == 0 and hf.returncode == 0, gg.stderr[-1500:] + hf.stderr[-1500:]
    assert gg.stdout.count("\n") == 2 and gg.stdout == hf.stdout   # a random model writes odd bytes: count newlines


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_tokenizer, monkeypatch):
    """ENOSPC injected into the GGUF writer, direct (q8_0) and through the f16 scratch file (q4_k_m):
    one line naming the output, no file and no scratch left; too little free space is refused first."""
    import errno
    import importlib.util
    from collections import namedtuple

    from adeptlm import atomic

    _, d = save(tmp_path, "qwen2", tiny_tokenizer)
    real = gguf.GGUFWriter.write_tensor_data

    def full(self, tensor, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    outtypes = ["q8_0"] + (["q4_k_m"] if importlib.util.find_spec("llama_cpp") else [])
    for outtype in outtypes:
        with pytest.raises(AdeptError) as err:
            export_gguf(str(d), tmp_path / "out.gguf", outtype, progress=False)
        assert "\n" not in str(err.value) and str(tmp_path / "out.gguf") in str(err.value)
        assert "disk filled up" in str(err.value)
        assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", real)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(AdeptError, match="not enough disk space"):
        export_gguf(str(d), tmp_path / "out.gguf", "f16", progress=False)
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []
