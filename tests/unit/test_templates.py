"""Loss masks and prompts on a tiny tokenizer with chatml and Llama-3 special tokens."""

from __future__ import annotations

import re

import pytest

from adeptlm.errors import AdeptError
from adeptlm.templates import IGNORE_INDEX, encode_conversation, encode_prompt, get_template, render

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hello world"},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
]


def trained_spans(tok, enc):
    """Decoded runs of consecutive trained tokens, in order."""
    spans, run = [], []
    for t, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            assert lab == t  # a trained label is the token itself (the model shifts internally)
            run.append(t)
        elif run:
            spans.append(tok.decode(run))
            run = []
    if run:
        spans.append(tok.decode(run))
    return spans


def masked_text(tok, enc):
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX])


@pytest.mark.parametrize("name,eot", [("llama3", "<|eot_id|>"), ("chatml", "<|im_end|>"),
                                      ("auto", "<|im_end|>"), ("alpaca", "<|endoftext|>")])
def test_every_assistant_turn_trained_with_terminator(tiny_tokenizer, name, eot):
    tmpl = get_template(tiny_tokenizer, name)
    assert tmpl.eot == eot
    enc = encode_conversation(tiny_tokenizer, tmpl, CONV)
    assert len(enc.input_ids) == len(enc.labels)
    assert trained_spans(tiny_tokenizer, enc) == ["Hello world" + eot, "Two plus two is four." + eot]
    masked = masked_text(tiny_tokenizer, enc)
    for text in ("You are terse.", "Hello there", "What is two plus two?"):
        assert text in masked
    # the rendered text is exactly the template's own rendering
    assert tiny_tokenizer.decode(enc.input_ids) == render(tiny_tokenizer, tmpl.jinja, CONV, False)


@pytest.mark.parametrize("name", ["llama3", "chatml", "auto", "alpaca"])
def test_generation_prompt_is_training_prefix(tiny_tokenizer, name):
    tmpl = get_template(tiny_tokenizer, name)
    for cut in (2, 4):  # before the first and before the second assistant turn
        prompt = encode_prompt(tiny_tokenizer, tmpl, CONV[:cut])
        full = encode_conversation(tiny_tokenizer, tmpl, CONV)
        assert full.input_ids[: len(prompt)] == prompt
        assert all(lab == IGNORE_INDEX for lab in full.labels[len(prompt) - 1: len(prompt)])
        assert full.labels[len(prompt)] != IGNORE_INDEX  # the reply starts right after the prompt


def test_llama3_renders_the_seed_format(tiny_tokenizer):
    tmpl = get_template(tiny_tokenizer, "llama3")
    conv = [{"role": "user", "content": "问题"}, {"role": "assistant", "content": "回答"}]
    expected = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                "You are a helpful assistant. 你是一个乐于助人的助手。<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\n问题<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n回答<|eot_id|>")
    assert render(tiny_tokenizer, tmpl.jinja, conv, False) == expected
    enc = encode_conversation(tiny_tokenizer, tmpl, conv)
    assert enc.input_ids.count(tiny_tokenizer.convert_tokens_to_ids("<|begin_of_text|>")) == 1
    assert trained_spans(tiny_tokenizer, enc) == ["回答<|eot_id|>"]
    # the glue is masked: exactly the assistant content and terminator are trained
    eot_id = tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert enc.labels[-1] == eot_id


def test_chatml_newline_after_terminator_is_masked(tiny_tokenizer):
    tmpl = get_template(tiny_tokenizer, "chatml")
    enc = encode_conversation(tiny_tokenizer, tmpl, CONV[:3])
    eot_id = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    last_trained = max(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert enc.input_ids[last_trained] == eot_id
    assert all(lab == IGNORE_INDEX for lab in enc.labels[last_trained + 1:])
    assert tiny_tokenizer.decode(enc.input_ids[last_trained + 1:]) == "\n"


def test_template_file_and_errors(tiny_tokenizer, tmp_path):
    from adeptlm.templates import CHATML

    f = tmp_path / "t.jinja"
    f.write_text(CHATML)
    assert get_template(tiny_tokenizer, str(f)).eot == "<|im_end|>"
    with pytest.raises(AdeptError, match="unknown template"):
        get_template(tiny_tokenizer, "vicuna-nope")
    unstable = ("{% for m in messages %}{% if loop.last %}LAST:{% endif %}{{ m['content'] }}<|im_end|>"
                "{% endfor %}")
    f.write_text(unstable)
    with pytest.raises(AdeptError, match="renders earlier turns differently"):
        encode_conversation(tiny_tokenizer, get_template(tiny_tokenizer, str(f)), CONV)


def test_missing_special_tokens_are_named():
    from conftest import build_tiny_tokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    bare = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    with pytest.raises(AdeptError, match=re.escape("<|eot_id|>")):
        get_template(bare, "llama3")
    with pytest.raises(AdeptError, match="no chat template"):
        get_template(bare, None)
    assert build_tiny_tokenizer().chat_template is None
