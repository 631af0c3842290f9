"""gemma3-270m, the multilingual known model: materialised with Gemma's turn format as its chat
template, its real tokenizer's masks, and its f16 GGUF tokenizing (Chinese, traditional, full-width,
emoji, code, whitespace) and answering in llama.cpp exactly as in transformers."""

from __future__ import annotations

import json

import pytest

from adeptlm.models import KNOWN_MODELS, is_installed, load_tokenizer
from adeptlm.templates import GEMMA, encode_conversation, encode_prompt, get_template, render
from conftest import run_adept, trained_runs

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not is_installed("gemma3-270m"), reason=KNOWN_MODELS["gemma3-270m"].install)]

CONV = [{"role": "system", "content": "请简短回答。"}, {"role": "user", "content": "天空是什么颜色？"},
        {"role": "assistant", "content": "蓝色。"}, {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green."}]


def test_gemma_template_is_the_default_and_masks():
    tok = load_tokenizer("gemma3-270m")
    assert tok.chat_template == GEMMA
    tmpl = get_template(tok, None)
    assert tmpl.eot == "<end_of_turn>"
    assert get_template(tok, "gemma").jinja == tmpl.jinja
    enc = encode_conversation(tok, tmpl, CONV)
    text = render(tok, tmpl.jinja, CONV, add_generation_prompt=False)
    assert text == ("<bos><start_of_turn>user\n请简短回答。\n\n天空是什么颜色？<end_of_turn>\n<start_of_turn>model\n"
                    "蓝色。<end_of_turn>\n<start_of_turn>user\nAnd grass?<end_of_turn>\n<start_of_turn>model\n"
                    "Green.<end_of_turn>\n")
    spans = trained_runs(enc)
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert [tok.decode(s) for s in spans] == ["蓝色。<end_of_turn>", "Green.<end_of_turn>"]
    assert all(s[-1] == eot for s in spans) and enc.input_ids[0] == tok.bos_token_id
    assert enc.input_ids.count(tok.bos_token_id) == 1
    for cut in (2, 4):  # the inference prompt is the training prefix and the whole rendering's tokens
        prompt = encode_prompt(tok, tmpl, CONV[:cut])
        assert enc.input_ids[: len(prompt)] == prompt
        whole = render(tok, tmpl.jinja, CONV[:cut], add_generation_prompt=True)
        assert whole.endswith("<start_of_turn>model\n")
        assert tok(whole, add_special_tokens=False)["input_ids"] == prompt


def test_f16_gguf_tokenizes_and_answers_like_transformers(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    gguf_file = tmp_path / "gemma3-f16.gguf"
    rc = run_adept("export", "gguf", "--model", "gemma3-270m", "--outtype", "f16", "--output", str(gguf_file))
    assert rc.returncode == 0, rc.stderr[-2000:]
    rc = run_adept("export", "check", "--model", "gemma3-270m", "--gguf", str(gguf_file), "--tokens", "16",
                   "--output_dir", str(tmp_path / "check"), timeout=900)
    assert rc.returncode == 0, rc.stderr[-2000:]
    report = json.loads((tmp_path / "check" / "check.json").read_text())
    assert report["tokenization_texts"] >= 17 and report["tokenization_mismatches"] == [], report
    assert report["greedy_prompts"] == 20 and report["greedy_identical"] == 20, report["greedy_examples"]
