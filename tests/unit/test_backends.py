"""One backend interface: the same chat prompt ids from every command and backend, and streamed text
that agrees with greedy generation, honours stop strings and the end-of-turn token."""

from __future__ import annotations

import importlib.util

import pytest

from adeptlm.backends import Delta, GenParams, HFBackend, text_deltas
from adeptlm.templates import encode_prompt, get_template
from conftest import build_tiny_model

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What colour is the sea?"}]


@pytest.fixture
def hf(tiny_tokenizer):
    return HFBackend(build_tiny_model("llama", len(tiny_tokenizer)).eval(), tiny_tokenizer, batch_size=4)


def joined(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def test_chat_prompt_is_the_template_segments_everywhere(hf, tiny_tokenizer, monkeypatch):
    """Exams (prompts._chat), replay/retention (chat_greedy), serve/chat (Engine) and export check all
    take their ids from Backend.chat_prompt = templates.encode_prompt, not from apply_chat_template."""
    import adeptlm.backends as backends_module
    from adeptlm.evaluate.prompts import _chat
    from adeptlm.serve.engine import Engine

    want = encode_prompt(tiny_tokenizer, get_template(tiny_tokenizer), MESSAGES)
    assert hf.chat_prompt(MESSAGES) == want
    assert _chat(tiny_tokenizer, get_template(tiny_tokenizer), MESSAGES, 0).ids == want

    seen = []
    monkeypatch.setattr(HFBackend, "stream", lambda self, ids, p: iter(seen.append(list(ids)) or [Delta("", "stop")]))
    list(Engine(hf).chat(MESSAGES, GenParams(max_tokens=2)))
    assert seen == [want]

    one_turn = [{"role": "user", "content": "What colour is the sea?"}]
    captured = []
    monkeypatch.setattr(HFBackend, "load", classmethod(lambda cls, spec, **kw: hf))
    monkeypatch.setattr(HFBackend, "generate", lambda self, ids, n, stop: captured.extend(ids) or [[] for _ in ids])
    backends_module.chat_greedy("tiny", ["What colour is the sea?"], 4)
    assert captured == [encode_prompt(tiny_tokenizer, get_template(tiny_tokenizer), one_turn)]
    assert hf.stop_ids == sorted({tiny_tokenizer.eos_token_id, tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")})


def test_greedy_stream_is_the_greedy_generation(hf, tiny_tokenizer):
    ids = hf.chat_prompt(MESSAGES)
    greedy = hf.generate([ids], 12, hf.stop_ids)[0]
    deltas = list(hf.stream(ids, GenParams(max_tokens=12, temperature=0)))
    assert joined(deltas) == tiny_tokenizer.decode(greedy, skip_special_tokens=True)
    last = deltas[-1]
    assert last.prompt_tokens == len(ids) and last.finish_reason in ("stop", "length")
    assert last.completion_tokens == len(greedy) + (last.finish_reason == "stop")


def test_text_deltas_stop_token_stop_string_and_length(tiny_tokenizer):
    tok = tiny_tokenizer
    body = tok("Hello world, the quick brown fox", add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    out = list(text_deltas(iter(body + [im_end, 5, 6]), tok, [im_end], GenParams(max_tokens=99), 7))
    assert joined(out) == "Hello world, the quick brown fox"
    assert (out[-1].finish_reason, out[-1].prompt_tokens, out[-1].completion_tokens) == ("stop", 7, len(body) + 1)

    out = list(text_deltas(iter(body), tok, [im_end], GenParams(max_tokens=99, stop=["quick"]), 0))
    assert joined(out) == "Hello world, the " and out[-1].finish_reason == "stop"
    # a stop string is never half sent: no delta holds "qu" before the stop is known
    assert not any(d.text.endswith(("q", "qu", "qui", "quic")) for d in out)

    out = list(text_deltas(iter(body), tok, [im_end], GenParams(max_tokens=3), 0))
    assert joined(out) == tok.decode(body[:3]) and out[-1].finish_reason == "length"


def test_text_deltas_wait_for_a_whole_character(tiny_tokenizer):
    """Byte-level tokens of one Chinese character decode to U+FFFD alone; no delta may carry that."""
    tok = tiny_tokenizer
    ids = tok("海蓝", add_special_tokens=False)["input_ids"]
    assert len(ids) > 2      # split into byte pieces by this small vocabulary
    out = list(text_deltas(iter(ids), tok, [], GenParams(max_tokens=99), 0))
    assert joined(out) == "海蓝" and not any("\ufffd" in d.text for d in out)


def test_closing_the_stream_stops_generation(hf):
    """The generation thread's second forward pass waits until the consumer has closed the stream (a
    timer opens it), so the count does not depend on how fast either thread runs: the prefill, the
    forward under way when the close came, and no more."""
    import threading

    ids = hf.chat_prompt(MESSAGES)
    forwards, gate = [], threading.Event()

    def count(module, args):
        forwards.append(1)
        if len(forwards) == 2:
            gate.wait(30)

    hook = hf.model.register_forward_pre_hook(count)
    try:
        stream = hf.stream(ids, GenParams(max_tokens=200, temperature=1.0, seed=0))
        next(stream)
        threading.Timer(0.3, gate.set).start()
        stream.close()                   # what the server does when a client goes away; joins the thread
    finally:
        hook.remove()
    assert len(forwards) == 2, len(forwards)   # 200 tokens were allowed
    assert hf.generate([ids], 3, [])[0]  # the model is free again


needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed")


def tiny_gguf(tmp_path, tokenizer, n_ctx: int = 256):
    """The tiny model exported to an f32 GGUF and loaded by llama.cpp, with the HF model it came from."""
    from adeptlm.backends import LlamaCppBackend
    from adeptlm.export.gguf import export_gguf

    model = build_tiny_model("llama", len(tokenizer))
    d = tmp_path / "tiny"
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    path = export_gguf(str(d), tmp_path / "tiny.gguf", "f32", progress=False).path
    return LlamaCppBackend.load(path, n_ctx=n_ctx), model


@needs_llama_cpp
def test_gguf_backend_builds_the_same_prompt_and_streams_the_same_greedy_text(tmp_path, tiny_tokenizer):
    """The tokenizer read back from the exported GGUF gives the HF directory's chat prompt ids, and
    llama.cpp's greedy stream is its own greedy generation."""
    gg, model = tiny_gguf(tmp_path, tiny_tokenizer)
    try:
        hf = HFBackend(model.eval(), tiny_tokenizer)
        ids = hf.chat_prompt(MESSAGES)
        assert gg.chat_prompt(MESSAGES) == ids and gg.stop_ids == hf.stop_ids
        greedy = gg.generate([ids], 10, gg.stop_ids)[0]
        streamed = joined(list(gg.stream(ids, GenParams(max_tokens=10, temperature=0))))
        assert streamed == tiny_tokenizer.decode(greedy, skip_special_tokens=True)
    finally:
        gg.close()


def check_batched_rows(backend):
    """Rows decoded together (own max_tokens) give what each gives alone; a cancelled row gets nothing
    more and the others are not disturbed."""
    import threading

    prompts = [backend.chat_prompt([{"role": "user", "content": c}])
               for c in ("hi", "What colour is the sea?", "Name the red planet, please")]
    params = [GenParams(max_tokens=n, temperature=0) for n in (4, 9, 6)]
    got, last = {i: "" for i in range(3)}, {}
    for row, d in backend.stream_batch(prompts, params):
        got[row] += d.text
        if d.finish_reason:
            last[row] = d
    for i in range(3):
        alone = list(backend.stream(prompts[i], params[i]))
        assert got[i] == joined(alone)
        assert (last[i].finish_reason, last[i].completion_tokens, last[i].prompt_tokens) == \
            (alone[-1].finish_reason, alone[-1].completion_tokens, len(prompts[i]))
    flags = [threading.Event() for _ in prompts]
    flags[1].set()
    rows = [row for row, _ in backend.stream_batch(prompts, params, flags)]
    assert 1 not in rows and {0, 2} <= set(rows)
    return prompts


def test_batched_stream_gives_each_row_its_own_answer(hf):
    check_batched_rows(hf)


@needs_llama_cpp
def test_gguf_parallel_sequences_give_each_row_its_own_answer(tmp_path, tiny_tokenizer):
    """llama.cpp decodes the rows as parallel sequences of one context: each row's text is what
    Llama.generate gives it alone; with a context too small for all rows at once they go in groups
    and still agree; a sampled batch gives each row text of its own length limit."""
    gg, _ = tiny_gguf(tmp_path, tiny_tokenizer, n_ctx=256)
    try:
        prompts = check_batched_rows(gg)
        decodes = []
        import llama_cpp
        real = llama_cpp.llama_decode
        gg.n_ctx = max(len(p) for p in prompts) + 12      # room for one row at a time
        try:
            llama_cpp.llama_decode = lambda ctx, batch: decodes.append(batch.n_tokens) or real(ctx, batch)
            grouped = {}
            for row, d in gg.stream_batch(prompts, [GenParams(max_tokens=9, temperature=0)] * 3):
                grouped[row] = grouped.get(row, "") + d.text
        finally:
            llama_cpp.llama_decode = real
            gg.n_ctx = 256
        assert [grouped[r] for r in range(3)] == \
            [joined(list(gg.stream(p, GenParams(max_tokens=9, temperature=0)))) for p in prompts]
        assert max(decodes) == max(len(p) for p in prompts)    # no decode call held two prompts
        sampled = {}
        for row, d in gg.stream_batch(prompts, [GenParams(max_tokens=n, temperature=1.0) for n in (3, 5, 7)]):
            if d.finish_reason:
                sampled[row] = d.completion_tokens
        assert all(sampled[r] <= n for r, n in zip(range(3), (3, 5, 7))) and len(sampled) == 3
    finally:
        gg.close()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_a_llama_cpp_built_with_amx_is_refused_in_one_line(monkeypatch):
    """An AMX build segfaulted on quantised files here (llama-cpp-python 0.3.36): refused before loading."""
    import llama_cpp

    from adeptlm.backends.llamacpp import LlamaCppBackend, refuse_amx_build
    from adeptlm.errors import AdeptError

    real = llama_cpp.llama_print_system_info()
    assert b"AMX_INT8 = 1" not in real, "the installed llama-cpp-python has AMX kernels: rebuild it (make setup)"
    refuse_amx_build()  # the installed build passes
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: real + b"AMX_INT8 = 1 | ")
    monkeypatch.delenv("ADEPT_ALLOW_AMX", raising=False)
    with pytest.raises(AdeptError, match="AMX") as err:
        LlamaCppBackend("no-such.gguf", tokenizer=None)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("ADEPT_ALLOW_AMX", "1")
    refuse_amx_build()


@needs_llama_cpp
def test_a_gguf_tokenizer_is_converted_once_and_reloads_identically(tmp_path, tiny_tokenizer, monkeypatch):
    """The cached conversion gives the same ids, special tokens and chat template as converting the
    GGUF again; a changed file gets a new entry and the stale one is removed."""
    import os

    from transformers import AutoTokenizer

    from adeptlm.models import gguf_tokenizer

    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path / "home"))
    gg, _ = tiny_gguf(tmp_path, tiny_tokenizer)
    gg.close()
    fresh = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    first = gguf_tokenizer(tmp_path / "tiny.gguf")
    entries = list((tmp_path / "home" / "tokenizers").iterdir())
    assert len(entries) == 1 and (entries[0] / "adeptlm-tokenizer.json").is_file()
    cached = gguf_tokenizer(tmp_path / "tiny.gguf")
    texts = ["Hello, world!", "以下是中国关于医学考试的单项选择题", "def add(a, b):\n    return a + b", " A\n答案：B"]
    for tok in (first, cached):
        assert [tok(t)["input_ids"] for t in texts] == [fresh(t)["input_ids"] for t in texts]
        assert tok.chat_template == fresh.chat_template
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == (fresh.bos_token, fresh.eos_token, fresh.pad_token)
        assert tok.apply_chat_template(MESSAGES, tokenize=False) == fresh.apply_chat_template(MESSAGES, tokenize=False)
    st = (tmp_path / "tiny.gguf").stat()
    os.utime(tmp_path / "tiny.gguf", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    gguf_tokenizer(tmp_path / "tiny.gguf")
    after = list((tmp_path / "home" / "tokenizers").iterdir())
    assert len(after) == 1 and after != entries


@needs_llama_cpp
def test_gguf_continuations_scored_in_one_decode_match_token_by_token(tmp_path, tiny_tokenizer):
    """continuation_logprobs asks llama.cpp for every continuation position's logits in one decode;
    the sums equal scoring each token after its own prefix through next_logits (the path it replaced)."""
    import torch

    gg, model = tiny_gguf(tmp_path, tiny_tokenizer)
    try:
        enc = lambda t: tiny_tokenizer(t)["input_ids"]  # noqa: E731
        ctx = enc("Question: what colour is the sea?\nAnswer:")
        pairs = [(ctx, enc(" blue and deep")), (ctx, enc(" red")), (ctx[:5], enc(" the sea is green")),
                 (ctx, enc(" blue and deep"))]
        got = gg.continuation_logprobs(pairs)
        want = []
        for c, x in pairs:
            gg.llm.reset()
            want.append(sum(torch.log_softmax(torch.from_numpy(gg.next_logits(c + x[:k])), -1)[t].item()
                            for k, t in enumerate(x)))
        assert got == pytest.approx(want, abs=1e-3)
        assert got[0] == pytest.approx(got[3], abs=1e-5) and len(set(round(g, 3) for g in got[:3])) == 3
        # and both are the HF model's own log-likelihoods (f32 weights; llama.cpp keeps keys and values in f16)
        hf = HFBackend(model.eval(), tiny_tokenizer)
        assert got == pytest.approx(hf.continuation_logprobs(pairs), rel=2e-4)
    finally:
        gg.close()


def test_hf_continuations_reuse_their_context_and_match_whole_sequences(hf, tiny_tokenizer):
    """Options sharing a context run it once, contexts sharing a header run that once, and only the
    options' own positions are scored; each sum equals the log-likelihood read off one unpadded
    forward of context + continuation (the old way)."""
    import torch

    enc = lambda t: tiny_tokenizer(t)["input_ids"]  # noqa: E731
    ctx = enc("Question: what colour is the sea?\nA. blue\nB. red\nAnswer:")
    header = enc("The following are questions about the sea.\n\nQ: is it wet?\nAnswer: yes\n\n")
    mixed = [(ctx, enc(" blue")), (ctx, enc(" red, like a rose")), (ctx[:3], enc(" the sea")), (ctx[:1], enc(" x y")),
             (ctx, enc(" green")), (ctx, enc(" a very long answer about the colour of the deep sea water"))]
    exam = [(header + enc(q), enc(o)) for q in ("Q: deep?\nAnswer:", "Q: salty or sweet?\nAnswer:", "Q: blue?")
            for o in (" yes", " no", " it is salty and deep")] + [(header, enc(" plain"))]
    for pairs in (mixed, exam):
        want = []
        with torch.inference_mode():
            for c, x in pairs:
                logprobs = torch.log_softmax(hf.model(input_ids=torch.tensor([c + x])).logits[0].float(), -1)
                want.append(sum(logprobs[len(c) - 1 + k, t].item() for k, t in enumerate(x)))
        assert hf.continuation_logprobs(pairs) == pytest.approx(want, abs=1e-4)


def test_the_backend_contract_and_its_one_resolver(tmp_path, tiny_model_dir):
    """Every backend declares what it can do; the resolver refuses what a backend cannot do before
    loading anything, with one line, and callers read the flags, not names."""
    from adeptlm.backends import KINDS, Backend, load_backend
    from adeptlm.errors import AdeptError

    flags = {k: (c.scores, c.batches, c.embeds) for k, c in KINDS.items()}
    assert flags == {"transformers": (True, True, True), "llama.cpp": (True, True, True), "vllm": (True, True, False)}
    for method in ("last_logits", "next_token_scores", "continuation_logprobs", "generate", "embed"):
        assert getattr(Backend, method) is not None     # declared on the contract, not only on subclasses
    with pytest.raises(NotImplementedError, match="returns no logits"):
        Backend().last_logits([])
    hf = load_backend(str(tiny_model_dir), mode="cloze")
    assert hf.formulations == ("letter", "cloze", "generate") and hf.name == "transformers"
    for kwargs, message in [(dict(backend="llama.cpp"), "needs a .gguf model"),
                            (dict(backend="onnx"), "unknown --backend onnx")]:
        with pytest.raises(AdeptError, match=message):
            load_backend(str(tiny_model_dir), **kwargs)
    with pytest.raises(AdeptError, match="no such GGUF file"):
        load_backend(str(tmp_path / "missing.gguf"))
