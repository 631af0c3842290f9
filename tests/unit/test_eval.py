"""Exam prompts byte for byte, scoring on controlled logits through the real scoring code, outputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adeptlm.backends import HFBackend, ScoreRequest, plan_batches
from adeptlm.data.exams import LETTERS, Question
from adeptlm.evaluate.exam import (ExamConfig, build_summary, extract_answer, letter_candidates, run_exam,
                                   score_subject, SubjectResult)
from adeptlm.evaluate.prompts import subject_prompts
from adeptlm.errors import AdeptError
from adeptlm.evaluate.subjects import CEVAL, subject_info
from adeptlm.templates import get_template

Q = [Question(str(i), f"Question {i}?" + " two" * i, [f"a{i}", f"b{i}", f"c{i}", f"d{i}"], "ABCD"[i % 4], None, f"x:{i}")
     for i in range(7)]
H = "以下是中国关于高中物理考试的单项选择题，请选出其中的正确答案。\n\n"


def fmt(q, ans=False):
    s = f"{q.question}\nA. {q.choices[0]}\nB. {q.choices[1]}\nC. {q.choices[2]}\nD. {q.choices[3]}\n答案："
    return s + (f"{q.answer}\n\n" if ans else "")


def test_ceval_prompts_zero_and_five_shot(tiny_tokenizer):
    info = subject_info("ceval", "high_school_physics")
    assert info.display == "高中物理" and info.category == "STEM"
    zero = subject_prompts("ceval", info, [], Q[5:], tiny_tokenizer, with_prompt=False)
    assert zero[0].text == H + fmt(Q[5]) and zero[0].prefix_len > 0  # the header is shared
    five = subject_prompts("ceval", info, Q[:5], Q[5:], tiny_tokenizer, with_prompt=False)
    assert five[0].text == H + "".join(fmt(d, True) for d in Q[:5]) + fmt(Q[5])
    assert five[1].text.endswith(fmt(Q[6])) and five[0].prefix_len > 0
    assert five[0].ids == tiny_tokenizer(five[0].text)["input_ids"]


def test_mmlu_prompt_has_the_original_double_space(tiny_tokenizer):
    info = subject_info("mmlu", "college_biology")
    assert info.category == "STEM"
    p = subject_prompts("mmlu", info, Q[:1], Q[1:2], tiny_tokenizer, with_prompt=False)[0]
    assert p.text == ("The following are multiple choice questions (with answers) about  college biology.\n\n"
                      "Question 0?\nA. a0\nB. b0\nC. c0\nD. d0\nAnswer: A\n\n"
                      "Question 1? two\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:")


SYS = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant. 你是一个乐于助人的助手。<|eot_id|>"


def user(x):
    return f"<|start_header_id|>user<|end_header_id|>\n\n{x}<|eot_id|>"


def assistant(x=None):
    return "<|start_header_id|>assistant<|end_header_id|>\n\n" + (f"{x}<|eot_id|>" if x is not None else "")


def test_with_prompt_matches_the_seed_llama3_format(tiny_tokenizer):
    tmpl = get_template(tiny_tokenizer, "llama3")
    info = subject_info("ceval", "high_school_physics")
    zero = subject_prompts("ceval", info, [], Q[5:6], tiny_tokenizer, True, tmpl)[0]
    assert zero.text == "<|begin_of_text|>" + SYS + user(H + fmt(Q[5])) + assistant()
    few = subject_prompts("ceval", info, Q[:2], Q[5:7], tiny_tokenizer, True, tmpl)[0]
    # the seed's few-shot chat prompt, with one BOS (the seed wrote a literal one and the tokenizer added another)
    expected = ("<|begin_of_text|>" + SYS + user(H) + assistant("好的，我会结合高中物理相关知识回答")
                + user(fmt(Q[0])) + assistant("A") + user(fmt(Q[1])) + assistant("B") + user(fmt(Q[5]))
                + assistant())
    assert few.text == expected and few.prefix_len > 0


def test_ceval_subject_table_matches_the_release(shared_data):
    mapping = json.loads((shared_data / "ceval" / "subject_mapping.json").read_text(encoding="utf-8"))
    assert {k: tuple(v) for k, v in mapping.items()} == CEVAL


class StubLM(torch.nn.Module):
    """Logits we control: at position p the answer letter LETTERS[p % 4] is favoured, plus a fixed bias."""

    def __init__(self, vocab, letter_ids, bias=None):
        super().__init__()
        self.vocab, self.letter_ids = vocab, letter_ids
        self.bias = bias if bias is not None else torch.zeros(vocab)
        self.calls = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                logits_to_keep=None):
        b, t = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(t).expand(b, -1)
        logits = self.bias.expand(b, t, -1).clone()
        for k in range(4):
            logits[..., self.letter_ids[k]] += 10.0 * (position_ids % 4 == k)
        self.calls.append((b, t, cache is not None))
        if isinstance(logits_to_keep, int):  # as transformers does: an int keeps the last n positions
            logits = logits[:, -logits_to_keep:]
        elif logits_to_keep is not None:  # a tensor: the LM head only at these positions
            logits = logits[:, logits_to_keep]
        return SimpleNamespace(logits=logits, cache=StubCache() if use_cache else None)


class StubCache:
    layers = ()  # no layers to broadcast


def test_letter_mode_picks_the_favoured_letter_with_batching_and_prefix_reuse(tiny_tokenizer):
    cands = letter_candidates(tiny_tokenizer, "ceval")
    stub = StubLM(len(tiny_tokenizer), [c[0] for c in cands])
    backend = HFBackend(stub, tiny_tokenizer, batch_size=3)
    info = subject_info("ceval", "high_school_physics")
    prompts = subject_prompts("ceval", info, Q[:3], Q[3:], tiny_tokenizer, with_prompt=False)
    preds, _ = score_subject(backend, "ceval", prompts, Q[3:], "letter")
    # the next token after a prompt of n tokens sits at position n - 1
    assert preds == ["ABCD"[(len(p.ids) - 1) % 4] for p in prompts]
    assert any(cached for _, _, cached in stub.calls)  # the shared prefix was reused
    assert len({len(p.ids) % 4 for p in prompts}) > 1  # the test distinguishes rows


def test_cloze_mode_picks_the_option_text_the_logits_favour(tiny_tokenizer):
    qs = [Question("0", "Pick one", ["fox", "dog", "Hello", "world"], "C", None, "x"),
          Question("1", "Pick again", ["Hello", "fox", "dog", "world"], "A", None, "x")]
    bias = torch.zeros(len(tiny_tokenizer))
    for t in tiny_tokenizer("Hello", add_special_tokens=False)["input_ids"]:
        bias[t] = 8.0
    backend = HFBackend(StubLM(len(tiny_tokenizer), [0, 0, 0, 0], bias), tiny_tokenizer, batch_size=4)
    prompts = subject_prompts("ceval", subject_info("ceval", "logic"), [], qs, tiny_tokenizer, False, options=False)
    preds, extra = score_subject(backend, "ceval", prompts, qs, "cloze")
    assert preds == ["C", "A"] and extra["preds_acc"] == ["C", "A"]


def test_generate_mode_extracts_with_the_seed_patterns(tiny_tokenizer, monkeypatch):
    backend = HFBackend(StubLM(len(tiny_tokenizer), [0, 0, 0, 0]), tiny_tokenizer)
    replies = ["所以答案是C。", "I think the answer is: B", "dog", "no idea"]
    monkeypatch.setattr(backend, "generate", lambda prompts, n, stop: [
        tiny_tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies])
    qs = [Question(str(i), "q", ["fox", "dog", "cat", "eel"], "C", None, "x") for i in range(4)]
    prompts = subject_prompts("ceval", subject_info("ceval", "logic"), [], qs, tiny_tokenizer, False)
    preds, extra = score_subject(backend, "ceval", prompts, qs, "generate")
    assert preds == ["C", "B", "B", None] and extra["unparsed"] == 1


def test_generate_mode_run_scores_a_known_answer_set(tmp_path, tiny_model_dir, monkeypatch):
    """A whole generate-mode exam run (prompts, generation, parsing, CSV, summary) on replies fixed per
    question: the recorded letters, the unparsed count and the score are what those replies imply."""
    import csv

    from adeptlm.data.exams import read_exam
    from adeptlm.demo.subject import write_subject

    write_subject(tmp_path / "subject", 7)
    data = tmp_path / "subject" / "exam"
    questions = {q.question: q for s in read_exam(data).subjects.values() for q in s["val"]}
    replies = {"letter": "所以答案是{gold}。", "wrong": "答案：{other}", "none": "no idea"}

    def reply(q):       # a fixed kind per question, from its text: right, wrong, or unparsable
        kind = ("letter", "wrong", "none")[sum(map(ord, q.question)) % 3]
        other = LETTERS[(LETTERS.index(q.answer) + 1) % 4]
        return kind, replies[kind].format(gold=q.answer, other=other)

    def generate(self, prompts, max_new_tokens, stop_ids, **kw):
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            q = next(q for question, q in questions.items() if question in text)
            out.append(self.tokenizer(reply(q)[1], add_special_tokens=False)["input_ids"])
        return out

    monkeypatch.setattr(HFBackend, "generate", generate)
    out = tmp_path / "o"
    summary = run_exam(ExamConfig(model=str(tiny_model_dir), data_dir=data, output_dir=out, few_shot=False,
                                  mode="generate", do_save_csv=True))
    rows = [r for f in sorted((out / "take0").glob("*_val.csv")) for r in csv.DictReader(f.open(encoding="utf-8"))]
    kinds = [reply(questions[r["question"]])[0] for r in rows]
    assert len(rows) == len(questions) and {"letter", "wrong", "none"} <= set(kinds)
    for r, kind in zip(rows, kinds):
        expected = {"letter": r["answer"], "wrong": LETTERS[(LETTERS.index(r["answer"]) + 1) % 4], "none": ""}[kind]
        assert r["model_output"] == expected, (r["response"], r["model_output"])
    assert summary["All"]["num"] == len(rows) and summary["All"]["correct"] == kinds.count("letter")
    assert sum(v.get("unparsed", 0) for k, v in summary.items() if k not in ("All", "grouped")) == kinds.count("none")
    assert summary["All"]["score"] == pytest.approx(100 * kinds.count("letter") / len(rows), abs=1e-4)


def test_extract_answer_order():
    assert extract_answer("答案是D", ["a", "b", "c", "d"]) == "D"
    assert extract_answer("选项B正确，不是A", ["a", "b", "c", "d"]) == "B"
    assert extract_answer("the capital is Paris", ["London", "Paris", "Rome", "Oslo"]) == "B"
    assert extract_answer("nothing", ["x", "y", "z", "w"]) is None
    # the seed's first A-D character anywhere (Chinese answers) ...
    assert extract_answer("Daren is governed from Miraum", ["Miraum", "b", "c", "d"]) == "D"


def test_extract_answer_english_labels_only():
    opts = ["Miraum", "Ravalval", "Miloush", "Dovvedar"]
    # capitals inside names are not answers in the English layout; the named option is
    assert extract_answer("Daren is governed from Miloush.", opts, "mmlu") == "C"
    assert extract_answer("B. Ravalval", opts, "mmlu") == "B"
    assert extract_answer("(D)", opts, "mmlu") == "D"
    assert extract_answer("Answer: A", opts, "mmlu") == "A"
    assert extract_answer("I think option c is right", ["x", "y", "z", "w"], "mmlu") is None
    assert extract_answer("I think option C is right", ["x", "y", "z", "w"], "mmlu") == "C"
    # the first option named wins; a longer option is not mistaken for one it contains
    assert extract_answer("It is 100, not 10.", ["10", "100", "1", "0"], "mmlu") == "B"
    assert extract_answer("Dovvedar, then Miraum", opts, "mmlu") == "D"
    assert extract_answer("Britorfen", opts, "mmlu") is None


def test_prefix_reuse_gives_the_same_logits_as_full_prompts(tiny_model_dir):
    backend = HFBackend.load(str(tiny_model_dir), batch_size=2)
    tok = backend.tokenizer
    info = subject_info("ceval", "logic")
    prompts = subject_prompts("ceval", info, Q[:3], Q[3:], tok, with_prompt=False)
    assert all(p.prefix_len > 0 for p in prompts)
    reused = backend.last_logits([ScoreRequest(p.ids, p.prefix_len) for p in prompts])
    full = torch.stack([backend.last_logits([ScoreRequest(p.ids, 0)])[0] for p in prompts])
    assert torch.allclose(reused, full, atol=1e-4)


def _plan_cost(lengths, batches, overhead):
    return sum(overhead + len(b) * max(lengths[i] for i in b) for b in batches)


def _best_cost(lengths, max_rows, overhead):
    """Brute force over every way to cut the sorted lengths into contiguous batches."""
    import itertools

    srt = sorted(lengths, reverse=True)
    best = None
    for cuts in itertools.product([0, 1], repeat=len(srt) - 1):
        groups, cur = [], [srt[0]]
        for x, cut in zip(srt[1:], cuts):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(x)
        groups.append(cur)
        if max(len(g) for g in groups) <= max_rows:
            cost = sum(overhead + len(g) * g[0] for g in groups)
            best = cost if best is None else min(best, cost)
    return best


def test_plan_batches_is_optimal_and_covers_every_prompt():
    import random

    rng = random.Random(3)
    for _ in range(40):
        lengths = [rng.randint(5, 300) for _ in range(rng.randint(1, 9))]
        rows, overhead = rng.randint(1, 4), rng.choice([0, 16, 64, 500])
        batches = plan_batches(lengths, rows, overhead)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(1 <= len(b) <= rows for b in batches)
        assert _plan_cost(lengths, batches, overhead) == _best_cost(lengths, rows, overhead)
    # no overhead: no padding at all; a huge one: as few batches as the row limit allows, cut where
    # the lengths drop (50 50 30 | 10 10 10 pads nothing past 30, unlike 4 + 2)
    lengths = [50, 10, 50, 30, 10, 10]
    assert all(len({lengths[i] for i in b}) == 1 for b in plan_batches(lengths, 8, 0))
    assert [[lengths[i] for i in b] for b in plan_batches(lengths, 4, 10**6)] == [[50, 50, 30], [10, 10, 10]]


def test_batched_generation_equals_one_prompt_at_a_time(tiny_model_dir):
    backend = HFBackend.load(str(tiny_model_dir), batch_size=3)
    tok = backend.tokenizer
    texts = ["The sun", "A much longer prompt about the sea and the sky", "Hello there", "Cats", "One two three four"]
    prompts = [tok(t)["input_ids"] for t in texts]
    stop = [tok.eos_token_id]
    batched = backend.generate(prompts, 12, stop)  # left-padded batches of 3 and 2
    with torch.inference_mode():
        alone = []
        for ids in prompts:
            gen = backend.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                         eos_token_id=stop, pad_token_id=backend.pad_id)[0, len(ids):].tolist()
            alone.append(gen[: gen.index(stop[0])] if stop[0] in gen else gen)
    assert batched == alone and any(alone)


def test_prompt_style_overrides_the_file_layout(tmp_path, tiny_model_dir, monkeypatch):
    """An English exam kept in C-Eval's file layout is asked with MMLU's header and cue when told so."""
    import adeptlm.evaluate.exam as exam_mod
    from adeptlm.demo.subject import write_subject

    write_subject(tmp_path / "subject", 7)
    seen, real = [], exam_mod.score_subject

    def spy(backend, layout, prompts, questions, *args, **kw):
        seen.append((layout, prompts[0].text))
        return real(backend, layout, prompts, questions, *args, **kw)

    monkeypatch.setattr(exam_mod, "score_subject", spy)
    run_exam(ExamConfig(model=str(tiny_model_dir), data_dir=tmp_path / "subject" / "exam", output_dir=tmp_path / "o",
                        prompt_style="mmlu", few_shot=False, limit=2))
    assert len(seen) == 5 and {layout for layout, _ in seen} == {"mmlu"}
    assert all(t.startswith("The following are multiple choice questions (with answers) about  quenta ")
               and t.endswith("\nAnswer:") for _, t in seen)


def test_summary_layout_and_missing_subjects():
    rs = [SubjectResult("logic", "Humanities", "val", 10, 7, []), SubjectResult("law", "Humanities", "val", 30, 15, []),
          SubjectResult("physician", "Other", "val", 10, 2, [])]
    s = build_summary(rs)
    assert s["logic"] == {"score": 70.0, "num": 10, "correct": 7}
    assert s["grouped"]["Humanities"]["score"] == 55.0 and s["grouped"]["Humanities"]["macro"] == 60.0
    assert s["All"]["score"] == 48.0 and s["All"]["macro"] == pytest.approx(46.6667, abs=1e-3)  # (70 + 50 + 20) / 3
    assert "STEM" not in s["grouped"]  # subjects absent from the run do not crash the grouping


def test_exam_run_outputs_resume_and_submission(tmp_path, tiny_model_dir, shared_data):
    out = tmp_path / "ev"
    cfg = ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / "ceval", output_dir=out, limit=4,
                     do_save_csv=True)
    first = run_exam(cfg)
    assert first["All"]["num"] == 16 and set(first["grouped"]) == {"STEM", "Social Science", "Humanities", "Other"}
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"]["mode"] == "letter" and run["protocol"]["ntrain"] == 5
    csv_text = (out / "take0" / "basic_medicine_val.csv").read_text(encoding="utf-8")
    assert csv_text.splitlines()[0] == "id,question,A,B,C,D,answer,model_output,correctness"
    # an interrupted run resumes: finished subjects are not recomputed
    (out / "take0" / "subjects" / "logic.json").unlink(missing_ok=True)
    stamp = (out / "take0" / "subjects" / "basic_medicine.json").stat().st_mtime_ns
    assert run_exam(cfg) == first
    assert (out / "take0" / "subjects" / "basic_medicine.json").stat().st_mtime_ns == stamp
    test_out = tmp_path / "test"
    summary = run_exam(ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / "ceval", output_dir=test_out,
                                  limit=3, do_test=True))
    assert summary["All"]["score"] is None
    sub = json.loads((test_out / "take0" / "submission.json").read_text())
    assert set(sub) == {"basic_medicine", "high_school_geography", "high_school_physics", "modern_chinese_history"}
    assert all(set(v) == {"0", "1", "2"} and set(v.values()) <= set("ABCD") for v in sub.values())


def test_hf_dir_zero_adapter_and_merged_score_identically(tmp_path, tiny_model_dir, shared_data):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")  # B = 0: a zero adapter
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "merged")
    scores = []
    for spec in (tiny_model_dir, tmp_path / "adapter", tmp_path / "merged"):
        out = tmp_path / f"ev-{spec.name}"
        run_exam(ExamConfig(model=str(spec), data_dir=shared_data / "mmlu", output_dir=out, batch_size=3))
        scores.append([json.loads(f.read_text())["preds"] for f in sorted((out / "take0" / "subjects").iterdir())])
    assert scores[0] == scores[1] == scores[2]


def test_compare_table_and_chart(tmp_path):
    from adeptlm.evaluate.compare import run_compare

    def summary(score_stem, score_other):
        return {"a": {"score": score_stem, "num": 10, "correct": score_stem / 10},
                "b": {"score": score_other, "num": 10, "correct": score_other / 10},
                "grouped": {"STEM": {"score": score_stem, "num": 10}, "Other": {"score": score_other, "num": 10}},
                "All": {"score": (score_stem + score_other) / 2, "num": 20}}
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    (tmp_path / "before" / "summary.json").write_text(json.dumps(summary(30.0, 60.0)))
    (tmp_path / "after" / "summary.json").write_text(json.dumps(summary(70.0, 50.0)))
    rows, out = run_compare(tmp_path / "before", tmp_path / "after")
    by = {r["name"]: r for r in rows}
    assert by["STEM"]["delta"] == 40.0 and by["Other"]["delta"] == -10.0 and by["All"]["delta"] == 15.0
    md = (out / "compare.md").read_text()
    assert "Gain: STEM +40.00" in md and "Forgetting: Other -10.00" in md
    assert (out / "compare.png").stat().st_size > 1000


def test_perplexity_counts_every_token_once_and_matches_the_model_loss(tiny_model_dir):
    import math

    from adeptlm.evaluate.perplexity import perplexity
    from adeptlm.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    text = "The quick brown fox jumps over the lazy dog. " * 6
    ids = tok(text)["input_ids"]
    whole = perplexity(model, tok, [text], max_length=len(ids), stride=len(ids))
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert whole["tokens"] == len(ids) - 1
    assert whole["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    windowed = perplexity(model, tok, [text, "Hello world"], max_length=16, stride=5)
    assert windowed["tokens"] == len(ids) - 1 + len(tok("Hello world")["input_ids"]) - 1


def test_torchrun_splits_subjects_and_merges_the_same_summary(tmp_path, tiny_model_dir, shared_data):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    args = ["eval", "ceval", "--model_path", str(tiny_model_dir), "--data_dir", str(shared_data / "ceval"),
            "--limit", "5", "--ntrain", "2"]
    one = subprocess.run([sys.executable, "-m", "adeptlm", *args, "--output_dir", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "adeptlm", *args, "--output_dir", str(tmp_path / "two")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-2000:]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1 == s2 and s1["All"]["num"] == 20


def test_rerun_with_another_protocol_into_the_same_dir_is_refused(tmp_path, tiny_model_dir, shared_data):

    cfg = ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / "mmlu", output_dir=tmp_path / "ev", limit=2)
    run_exam(cfg)
    cfg.mode = "cloze"
    with pytest.raises(AdeptError, match="another evaluation .*mode"):
        run_exam(cfg)


def test_vllm_backend_without_vllm_says_which_environment_has_it(tmp_path, tiny_model_dir):
    """Where vLLM is not installed (the main environment: it pins an older transformers), the exam
    stops in one line, exit status 2, naming the environment `make vllm` builds. The real vLLM is
    tested in tests/vllm_engine/ from that environment."""
    import importlib.util

    from conftest import run_adept
    from adeptlm.demo.subject import write_subject

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/vllm_engine/ runs it for real")
    write_subject(tmp_path / "subject", 7)
    res = run_adept("eval", "exam", "--model", str(tiny_model_dir), "--data", str(tmp_path / "subject" / "exam"),
                    "--output_dir", str(tmp_path / "o"), "--backend", "vllm", "--mode", "cloze")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr[-2000:]
    assert "make vllm" in res.stderr and ".venv-vllm/bin/adept" in res.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


def test_one_protocol_source_for_flags_recipes_and_the_same_evaluation_check(tmp_path):
    """ExamConfig's fields are the CLI flags (with the seed's aliases), the recipe's eval: keys and the
    keys of eval-config.json; a recipe value is parsed as the flag would be."""
    import argparse
    from dataclasses import fields

    from adeptlm.evaluate.protocol import (RECIPE_KEYS, SAME_EVALUATION_KEYS, ExamConfig, add_exam_arguments,
                                           config_from_args, config_from_recipe)

    parser = argparse.ArgumentParser()
    add_exam_arguments(parser)
    dests = {a.dest for a in parser._actions} - {"help"}
    assert dests == {f.name for f in fields(ExamConfig)} - {"expect_layout"}
    args = parser.parse_args(["-m", "tiny", "--data", "x", "--few_shot", "False", "-k", "3", "--subjects", "a,b"])
    cfg = config_from_args(args, output_dir=tmp_path)
    assert (cfg.model, cfg.data_dir, cfg.few_shot, cfg.ntrain, cfg.subjects) == ("tiny", Path("x"), False, 3, ["a", "b"])
    assert cfg.mode == ExamConfig.__dataclass_fields__["mode"].default == "letter"
    assert set(RECIPE_KEYS) <= dests and "model" not in RECIPE_KEYS and "backend" in RECIPE_KEYS
    assert {"mode", "with_prompt", "ntrain", "prompt_style", "split"} <= set(SAME_EVALUATION_KEYS)
    r = config_from_recipe({"mode": "cloze", "few_shot": "false", "limit": "2"}, "r.yaml", model="m",
                           data_dir=Path("d"), output_dir=tmp_path)
    assert (r.mode, r.few_shot, r.limit, r.do_save_csv, r.ntrain) == ("cloze", False, 2, True, 5)
    with pytest.raises(AdeptError, match=r"r.yaml: eval.shots: not an exam setting"):
        config_from_recipe({"shots": 5}, "r.yaml")


def test_letter_counts_show_position_bias():
    from adeptlm.evaluate.exam import SubjectResult, letter_counts

    qs = [Question(str(i), "q", ["a", "b", "c", "d"], gold, None, "") for i, gold in enumerate("ABCDA")]
    r = SubjectResult("s", "STEM", "val", 5, 2, ["A", "A", "A", None, "A"])
    assert letter_counts([r], [qs]) == {"predicted": {"A": 4, "B": 0, "C": 0, "D": 0},
                                        "gold": {"A": 2, "B": 1, "C": 1, "D": 1}, "unanswered": 1}


def test_circular_mode_counts_a_question_only_if_right_under_every_rotation(tmp_path, tiny_model_dir, monkeypatch):
    """Controlled answers: the model knows questions 0-1 (picks the option reading 'right' wherever it
    is) and always says A on 2-3. Plainly it scores 3/4 (question 2's gold is A); circularly 2/4."""
    import adeptlm.evaluate.exam as exam_mod
    from adeptlm.evaluate.exam import rotate

    (tmp_path / "ex" / "val").mkdir(parents=True)
    rows = ["0,know one,right,w1,w2,w3,A", "1,know two,w1,w2,right,w3,C", "2,guess one,right,w1,w2,w3,A",
            "3,guess two,w1,right,w2,w3,B"]
    (tmp_path / "ex" / "val" / "demo_val.csv").write_text("id,question,A,B,C,D,answer\n" + "\n".join(rows) + "\n")

    def fake(backend, layout, prompts, questions, mode, *a, **k):
        return [LETTERS[q.choices.index("right")] if q.question.startswith("know") else "A" for q in questions], {}

    monkeypatch.setattr(exam_mod, "score_subject", fake)
    q = Question("0", "x", ["a", "b", "c", "d"], "B", None, "")
    assert [rotate(q, r).choices for r in range(3)] == [list("abcd"), list("bcda"), list("cdab")]
    assert [rotate(q, r).answer for r in range(4)] == ["B", "A", "D", "C"]
    scores = {}
    for circular in (False, True):
        out = tmp_path / f"out-{circular}"
        s = run_exam(ExamConfig(model=str(tiny_model_dir), data_dir=tmp_path / "ex", output_dir=out, few_shot=False,
                                circular=circular, do_save_csv=True))
        scores[circular] = s["All"]["score"]
    assert scores == {False: 75.0, True: 50.0}
    run = json.loads((tmp_path / "out-True" / "run.json").read_text())
    assert run["protocol"]["circular"] is True
    csv_rows = (tmp_path / "out-True" / "take0" / "demo_val.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[1] for r in csv_rows[1:]] == ["1", "1", "0", "0"]
