"""The embedded model served through transformers and through llama.cpp (a GGUF export): a streamed
chat answer ends at the end-of-turn token with finish_reason "stop" and no template tokens in it."""

from __future__ import annotations

import pytest

from conftest import run_adept, start_server

pytestmark = pytest.mark.e2e
openai = pytest.importorskip("openai")

TEMPLATE_TOKENS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>")


def streamed_answer(base: str) -> tuple[str, str]:
    c = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)
    text, finish = "", None
    for chunk in c.chat.completions.create(model="m", messages=[{"role": "user", "content": "What is 2 + 2?"}],
                                           max_tokens=200, temperature=0, stream=True):
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.parametrize("backend", ["transformers", "llama.cpp"])
def test_stream_stops_at_end_of_turn(tmp_path, backend):
    model = "smollm2-135m-instruct"
    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp")
        model = str(tmp_path / "smollm2-q8_0.gguf")
        rc = run_adept("export", "gguf", "--outtype", "q8_0", "--output", model)
        assert rc.returncode == 0, rc.stderr[-2000:]
    proc, base = start_server([model], tmp_path / "serve.log")
    try:
        text, finish = streamed_answer(base)
        # embeddings from the same server: one unit vector of the model's width per text
        c = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)
        vecs = [d.embedding for d in c.embeddings.create(model="m", input=["The sea is blue.", "2 + 2 = 4"]).data]
        assert [len(v) for v in vecs] == [576, 576] and vecs[0] != vecs[1]
        assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vecs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert finish == "stop", (finish, text)
    assert text.strip() and not any(t in text for t in TEMPLATE_TOKENS), text
