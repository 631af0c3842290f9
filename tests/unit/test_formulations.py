"""The two formulations of a multiple-choice question (OLMES): letter (MCF) and cloze (CF), side by side.

Cloze prompts byte for byte (lm-evaluation-harness's mmlu_continuation form for MMLU, the same shape
for C-Eval), acc and acc_norm on log-probabilities set by the test, the shared question prefix
against separate passes on a real tiny model, OLMES's best-formulation rule, and `--mode both`'s
outputs and report.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from adeptlm.backends import HFBackend
from adeptlm.data.exams import Question
from adeptlm.errors import AdeptError
from adeptlm.evaluate.exam import (ExamConfig, best_formulation, cloze_logprobs, cloze_picks, continuation_ids,
                                   run_exam, score_subject)
from adeptlm.evaluate.prompts import subject_prompts
from adeptlm.evaluate.subjects import subject_info
from adeptlm.templates import get_template

Q = [Question(str(i), f"Question {i}?", [f"a{i}", f"b{i}", f"c{i}", f"d{i}"], "ABCD"[i % 4], None, f"x:{i}")
     for i in range(4)]


def test_cloze_prompts_mmlu_as_lm_eval_continuation_and_ceval_alike(tiny_tokenizer):
    mmlu = subject_prompts("mmlu", subject_info("mmlu", "college_biology"), Q[:1], Q[1:2], tiny_tokenizer,
                           with_prompt=False, options=False)[0]
    assert mmlu.text == ("The following are questions (with answers) about college biology.\n\n"
                         "Question: Question 0?\nAnswer: a0\n\nQuestion: Question 1?\nAnswer:")
    ceval = subject_prompts("ceval", subject_info("ceval", "high_school_physics"), [], Q[2:3], tiny_tokenizer,
                            with_prompt=False, options=False)[0]
    assert ceval.text == "以下是中国关于高中物理考试的问题（附答案）。\n\nQuestion 2?\n答案："
    assert "A. " not in mmlu.text + ceval.text  # no option is listed


def test_cloze_in_the_chat_template_scores_the_option_where_the_answer_turn_begins(tiny_tokenizer):
    tmpl = get_template(tiny_tokenizer, "llama3")
    p = subject_prompts("ceval", subject_info("ceval", "high_school_physics"), Q[:1], Q[1:2], tiny_tokenizer,
                        True, tmpl, options=False)[0]
    assert p.text.endswith("Question 1?\n答案：<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "\n\na0<|eot_id|>" in p.text and "考试的问题（附答案）。\n\nQuestion 0?\n答案：<|eot_id|>" in p.text
    # the option's tokens follow the prompt's own tokens exactly
    cont = continuation_ids(tiny_tokenizer, p, "b1")
    assert tiny_tokenizer.decode(p.ids + cont, skip_special_tokens=False) == p.text + "b1"


class TokenLM(torch.nn.Module):
    """Next-token log-probabilities set by the test: the same distribution at every position."""

    def __init__(self, logprobs: torch.Tensor):
        super().__init__()
        self.logprobs = logprobs

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                logits_to_keep=None):
        b, t = input_ids.shape
        logits = self.logprobs.expand(b, t, -1).clone()
        if isinstance(logits_to_keep, int):  # as transformers does: an int keeps the last n positions
            logits = logits[:, -logits_to_keep:]
        elif logits_to_keep is not None:  # a tensor: the LM head only at these positions
            logits = logits[:, logits_to_keep]
        return SimpleNamespace(logits=logits, cache=SimpleNamespace(layers=()) if use_cache else None)


def test_acc_and_acc_norm_pick_what_the_formula_says_and_can_disagree(tiny_tokenizer):
    """log p of every token is set: an option's log-likelihood is the sum over its tokens, acc picks the
    largest sum, acc_norm the largest sum per character of the option's text."""
    vocab = len(tiny_tokenizer)
    raw = torch.full((vocab,), -30.0)
    enc = lambda s: tiny_tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    options = ["fox", "Hello world", "dog", "world"]
    # "dog": 2 likely tokens (the largest sum); "Hello world": 3 less likely tokens over 11 characters
    # (the largest per character); "fox" and "world" unlikely
    for word, value in (("fox", 1.0), ("world", 1.0), ("Hello world", 4.0), ("dog", 5.0)):
        for t in enc(word):
            raw[t] = value
    logprobs = torch.log_softmax(raw, -1)
    backend = HFBackend(TokenLM(logprobs), tiny_tokenizer, batch_size=4)
    q = Question("0", "Pick one", options, "B", None, "x")
    prompts = subject_prompts("ceval", subject_info("ceval", "logic"), [], [q], tiny_tokenizer, False, options=False)
    lls, pairs = cloze_logprobs(backend, "ceval", prompts, [q])
    want = [sum(float(logprobs[t]) for t in cont) for _, cont in pairs]
    assert lls[0] == pytest.approx(want, abs=1e-5)
    acc = max(range(4), key=lambda k: want[k])
    norm = max(range(4), key=lambda k: want[k] / len(options[k]))
    assert (acc, norm) == (2, 1), "the case must make acc and acc_norm disagree"
    preds, extra = score_subject(backend, "ceval", prompts, [q], "cloze")
    assert preds == ["ABCD"[norm]] and extra["preds_acc"] == ["ABCD"[acc]]
    # acc_norm divides by characters, not bytes: a Chinese option of 2 characters (6 bytes) against a
    # Latin one of 3 characters
    picks, _ = cloze_picks([[-2.0, -2.9]], [["汐澜", "abc"]])
    assert picks == ["B"]  # -2.9/3 > -2.0/2; per byte it would be -2.0/6 > -2.9/3


@pytest.mark.parametrize("arch, shots, window, attn", [("llama", 2, 0, "sdpa"), ("qwen2", 2, 0, "sdpa"),
                                                      ("llama", 2, 0, "eager"), ("gemma3", 2, 64, "sdpa"),
                                                      ("gemma3", 0, 128, "sdpa"), ("gemma3", 0, 128, "eager")])
def test_cloze_shares_the_question_prefix_and_matches_separate_passes(arch, shots, window, attn, tiny_tokenizer):
    """The header runs once, each question once with all its options packed after it under a 4-D
    mask, in padded batches: each option's log-likelihood still equals one unpadded forward of its
    context and continuation, under SDPA (a boolean mask) and eager attention (an additive one). A
    gemma3 with a 64-token sliding window is passed by the 2-shot prompts (options run as ordinary
    rows under the model's own masks); one with a 128-token window is not passed by the 0-shot ones
    (options packed)."""
    from conftest import build_tiny_model

    model = build_tiny_model(arch, len(tiny_tokenizer), sliding_window=window or 64).eval()
    model.set_attn_implementation(attn)
    assert model.config._attn_implementation == attn
    backend = HFBackend(model, tiny_tokenizer, batch_size=3)
    qs = [Question(str(i), f"What is {i} plus {i}?" + " Think." * i * shots, ["four", "a fox", "two dogs", "8"], "A",
                   None, "x") for i in range(3)]
    prompts = subject_prompts("mmlu", subject_info("mmlu", "college_biology"), Q[:shots], qs, tiny_tokenizer, False,
                              options=False)
    if arch == "gemma3":  # the case is the one the docstring names
        assert (max(len(p.ids) for p in prompts) + 4 > window - 1) == (shots > 0)
    lls, pairs = cloze_logprobs(backend, "mmlu", prompts, qs)
    k = 0
    with torch.inference_mode():
        for ll in lls:
            for x in ll:
                ctx, cont = pairs[k]
                logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
                lp = torch.log_softmax(logits, -1)
                alone = sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
                assert x == pytest.approx(alone, abs=1e-5)
                k += 1
    assert k == 12


@pytest.mark.parametrize("letter, cloze, best", [(25.0, 44.8, "cloze"), (61.0, 40.0, "letter"), (30.0, 30.0, "letter"),
                                                (None, 12.5, "cloze"), (50.0, None, "letter")])
def test_best_formulation_is_olmes_rule(letter, cloze, best):
    assert best_formulation({"letter": letter, "cloze": cloze}) == best


def test_mode_both_writes_each_formulation_with_its_interval(tmp_path, tiny_model_dir, shared_data):
    out = tmp_path / "both"
    cfg = ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / "ceval", output_dir=out, limit=3,
                     few_shot=False, do_save_csv=True)
    cfg.mode = "both"
    summary = run_exam(cfg)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    forms = summary["formulations"]
    assert set(forms) == {"letter", "cloze"} and summary["best_formulation"] in forms
    for name in ("letter", "cloze"):
        alone = json.loads((out / name / "summary.json").read_text())["All"]
        assert forms[name]["score"] == alone["score"] and forms[name]["num"] == 12
        lo, hi = forms[name]["interval"]
        assert lo <= forms[name]["score"] <= hi
        assert json.loads((out / name / "run.json").read_text())["protocol"]["mode"] == name
    assert "acc" in forms["cloze"] and forms["cloze"]["acc_norm"] == forms["cloze"]["score"]
    best = summary["best_formulation"]
    assert summary["All"] == json.loads((out / best / "summary.json").read_text())["All"]
    want = "cloze" if forms["cloze"]["score"] > forms["letter"]["score"] else "letter"
    assert best == want
    # each formulation's per-question answers differ in kind: cloze records its log-likelihoods
    sub = json.loads(next((out / "cloze" / "take0" / "subjects").iterdir()).read_text())
    assert len(sub["extra"]["loglikelihoods"][0]) == 4 and all(math.isfinite(x) for x in sub["extra"]["loglikelihoods"][0])


def test_circular_is_refused_for_cloze(tmp_path, tiny_model_dir, shared_data):
    cfg = ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / "ceval", output_dir=tmp_path / "c", limit=1)
    cfg.mode, cfg.circular = "cloze", True
    with pytest.raises(AdeptError, match="--circular"):
        run_exam(cfg)


def test_model_formulation_pools_the_base_models_answers_over_the_exams():
    from adeptlm.evaluate.exam import model_formulation

    subject = {"formulations": {"letter": {"correct": 19, "num": 64}, "cloze": {"correct": 18, "num": 64}}}
    general = {"formulations": {"letter": {"correct": 51, "num": 233}, "cloze": {"correct": 130, "num": 233}}}
    assert model_formulation([subject]) == "letter"  # 29.7% vs 28.1%: on its own, chance decides
    assert model_formulation([subject, general]) == "cloze"  # 70/297 vs 148/297
    assert model_formulation([{"All": {"score": 50.0}}]) is None  # scored one way only


def test_report_reads_both_exams_in_the_base_models_formulation(tmp_path, tiny_model_dir, shared_data):
    import shutil

    from adeptlm.evaluate.report import write_report

    root = tmp_path / "run"
    for key, folder in (("exam", "ceval"), ("general_exam", "mmlu")):
        cfg = ExamConfig(model=str(tiny_model_dir), data_dir=shared_data / folder, output_dir=root / "baseline" / key,
                         limit=4, few_shot=False, do_save_csv=True)
        cfg.mode = "both"
        run_exam(cfg)
        shutil.copytree(root / "baseline" / key, root / "after" / key)
    write_report(root, {"name": "t"})
    md = (root / "report.md").read_text(encoding="utf-8")
    from adeptlm.evaluate.exam import model_formulation

    base = [json.loads((root / "baseline" / k / "summary.json").read_text()) for k in ("exam", "general_exam")]
    form = model_formulation(base)
    assert f"- Subject exam ({form} formulation" in md and "+0.0 points" in md
    assert "## Formulations" in md
    table = [line for line in md.splitlines() if line.startswith(("| Subject exam | letter", "| Subject exam | cloze"))]
    assert len(table) == 2 and sum("**read**" in line for line in table) == 1
    assert next(line for line in table if "**read**" in line).split("|")[2].strip().startswith(form)
    assert "<h2>Formulations</h2>" in (root / "report.html").read_text(encoding="utf-8")
