"""Exam layouts as data (adeptlm/data/layouts.py), and exams with other than four options.

A five-option exam is built here in each of the three layouts and read, prompted and scored in every
formulation: the letter form on logits set by the test (the letter E can win), the cloze form on an
option text the logits favour, the generate form's extraction, CircularEval's five rotations, and
whole runs (--mode both, generate, circular) on a tiny model.
"""

from __future__ import annotations

import json

import pytest
import torch

from adeptlm.backends import HFBackend
from adeptlm.data import layouts
from adeptlm.data.exams import Question, read_exam
from adeptlm.errors import InputError
from adeptlm.evaluate.exam import (ExamConfig, extract_answer, letter_candidates, rotate, run_exam,
                                   score_subject)
from adeptlm.evaluate.prompts import subject_prompts
from adeptlm.evaluate.subjects import subject_info
from test_eval import StubLM

FIVE = [("0", "Which is the fifth?", ["one", "two", "three", "four", "five"], "E"),
        ("1", "Which is the second?", ["one", "two", "three", "four", "five"], "B"),
        ("2", "Which is the first?", ["one", "two", "three", "four", "five"], "A")]


def write_five(root, layout: str) -> None:
    """The same three five-option questions in one layout's files (dev and val/test splits)."""
    for split in ("dev", "val" if layout != "cmmlu" else "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        if layout == "ceval":
            lines = ["id,question,A,B,C,D,E,answer"] + [f"{i},{q},{','.join(c)},{a}" for i, q, c, a in FIVE]
            name = f"logic_{split}.csv"
        elif layout == "cmmlu":
            lines = [",Question,A,B,C,D,E,Answer"] + [f"{i},{q},{','.join(c)},{a}" for i, q, c, a in FIVE]
            name = "logic.csv"
        else:
            lines = [f"{q},{','.join(c)},{a}" for _, q, c, a in FIVE]
            name = f"logic_{split}.csv"
        (root / split / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("layout", layouts.NAMES)
def test_a_five_option_exam_is_read_in_every_layout(tmp_path, layout):
    write_five(tmp_path, layout)
    exam = read_exam(tmp_path)
    assert exam.layout == layout
    qs = next(iter(exam.subjects["logic"].values()))
    assert [q.choices for q in qs] == [c for _, _, c, _ in FIVE]
    assert [q.answer for q in qs] == ["E", "B", "A"]


def test_an_answer_outside_the_files_options_names_them(tmp_path):
    f = tmp_path / "logic_val.csv"
    f.write_text("id,question,A,B,C,D,E,answer\n0,q,a,b,c,d,e,F\n")
    with pytest.raises(InputError, match=r"logic_val.csv:2.*'answer'.*not one of A, B, C, D, E$"):
        read_exam(f)
    f.write_text("q,a,b,c,A\nq2,a,b,c,D\n")  # a headerless three-option file: D is not an option
    with pytest.raises(InputError, match=r"logic_val.csv:2.*not one of A, B, C$"):
        read_exam(f)


def test_every_layout_is_one_registered_object():
    """What the code asks of a layout is a field of its entry, not a branch on its name."""
    assert layouts.NAMES == ("ceval", "cmmlu", "mmlu")
    assert layouts.detect(["id", "question", "A", "B", "answer"]).name == "ceval"
    assert layouts.detect(["", "Question", "A", "B", "Answer"]).name == "cmmlu"
    assert layouts.detect(["What is 2+2?", "3", "4", "B"]).name == "mmlu"
    assert layouts.get("cmmlu").eval_splits == ("test",) and layouts.get("ceval").unanswered_split == "test"
    assert layouts.get("mmlu").columns_hint(5) == "question,A,B,C,D,E,answer"
    with pytest.raises(ValueError, match="unknown exam layout 'agieval'"):
        layouts.get("agieval")


@pytest.mark.parametrize("layout", layouts.NAMES)
def test_five_option_prompts_list_every_option(tiny_tokenizer, layout):
    qs = [Question(i, q, c, a, None, "x") for i, q, c, a in FIVE]
    info = subject_info(layout, "logic")
    letter = subject_prompts(layout, info, qs[:1], qs[1:2], tiny_tokenizer, with_prompt=False)[0].text
    cue = layouts.get(layout).answer_cue
    assert f"\nE. five{cue}{layouts.get(layout).answer_delimiter}E\n\n" in letter  # the demonstration's answer
    assert letter.endswith("Which is the second?\nA. one\nB. two\nC. three\nD. four\nE. five" + cue)
    cloze = subject_prompts(layout, info, qs[:1], qs[1:2], tiny_tokenizer, with_prompt=False, options=False)[0].text
    assert "E. " not in cloze and f"{cue}{layouts.get(layout).cloze_delimiter}five\n\n" in cloze


def test_the_letter_form_scores_all_five_letters(tiny_tokenizer):
    """Logits set by the test favour letter E at every position: every question is answered E, and a
    four-option question in the same batch still answers within A-D."""
    cands = letter_candidates(tiny_tokenizer, "ceval", 5)
    assert len(cands) == 5
    bias = torch.zeros(len(tiny_tokenizer))
    bias[cands[4][0]] = 40.0  # E, above any letter the stub favours by position (+10)
    bias[cands[2][0]] = 25.0  # then C
    backend = HFBackend(StubLM(len(tiny_tokenizer), [c[0] for c in cands[:4]], bias), tiny_tokenizer, batch_size=2)
    qs = [Question(i, q, c, a, None, "x") for i, q, c, a in FIVE]
    four = Question("3", "Four only", ["one", "two", "three", "four"], "C", None, "x")
    asked = qs + [four]
    prompts = subject_prompts("ceval", subject_info("ceval", "logic"), [], asked, tiny_tokenizer, with_prompt=False)
    preds, _ = score_subject(backend, "ceval", prompts, asked, "letter")
    assert preds == ["E", "E", "E", "C"]


def test_the_cloze_form_can_pick_the_fifth_option(tiny_tokenizer):
    bias = torch.zeros(len(tiny_tokenizer))
    for t in tiny_tokenizer(" Hello", add_special_tokens=False)["input_ids"]:  # MMLU's cloze delimiter is a space
        bias[t] = 8.0
    qs = [Question("0", "Pick one", ["fox", "dog", "cat", "world", "Hello"], "E", None, "x")]
    backend = HFBackend(StubLM(len(tiny_tokenizer), [0, 0, 0, 0], bias), tiny_tokenizer)
    prompts = subject_prompts("mmlu", subject_info("mmlu", "logic"), [], qs, tiny_tokenizer, False, options=False)
    preds, extra = score_subject(backend, "mmlu", prompts, qs, "cloze")
    assert preds == ["E"] and extra["preds_acc"] == ["E"] and len(extra["loglikelihoods"][0]) == 5


def test_extraction_reads_the_letters_a_question_has():
    five, four = ["one", "two", "three", "four", "five"], ["one", "two", "three", "four"]
    assert extract_answer("答案是E", five) == "E"
    assert extract_answer("答案是E", four) is None  # E is no option of a four-option question
    assert extract_answer("The answer is (E)", five, "mmlu") == "E"
    assert extract_answer("E.", five, "mmlu") == "E"
    assert extract_answer("Eventually, four", four, "mmlu") == "D"  # a capital in a word is no label


def test_circular_eval_rotates_five_options_five_times():
    q = Question("0", "x", list("abcde"), "B", None, "")
    assert [rotate(q, r).choices[0] for r in range(5)] == list("abcde")
    assert [rotate(q, r).answer for r in range(5)] == ["B", "A", "E", "D", "C"]
    assert all(rotate(q, r).choices[ord(rotate(q, r).answer) - 65] == "b" for r in range(5))


@pytest.mark.parametrize("layout", layouts.NAMES)
def test_a_five_option_exam_runs_in_every_formulation(tmp_path, tiny_model_dir, layout):
    """Whole runs on a tiny model: both formulations, generation, CircularEval; every answer is one
    of the five letters and the outputs carry the fifth column."""
    write_five(tmp_path / "ex", layout)
    base = dict(model=str(tiny_model_dir), data_dir=tmp_path / "ex", few_shot=False, do_save_csv=True)
    both = ExamConfig(**base, output_dir=tmp_path / "both")
    both.mode = "both"
    s = run_exam(both)
    for form in ("letter", "cloze"):
        assert s["formulations"][form]["num"] == 3
        sub = json.loads((tmp_path / "both" / form / "take0" / "subjects" / "logic.json").read_text())
        assert all(p in "ABCDE" for p in sub["preds"])
        header = (tmp_path / "both" / form / "take0").glob("logic_*.csv")
        assert next(header).read_text().splitlines()[0].startswith("id,question,A,B,C,D,E,answer")
    sub = json.loads((tmp_path / "both" / "cloze" / "take0" / "subjects" / "logic.json").read_text())
    assert all(len(x) == 5 for x in sub["extra"]["loglikelihoods"])
    letters = json.loads((tmp_path / "both" / "letter" / "take0" / "summary.json").read_text())["All"]["letters"]
    assert set(letters["gold"]) == set("ABCDE") and letters["gold"]["E"] == 1
    gen = ExamConfig(**base, output_dir=tmp_path / "gen", mode="generate", max_new_tokens=4)
    assert run_exam(gen)["All"]["num"] == 3
    circ = ExamConfig(**base, output_dir=tmp_path / "circ", circular=True)
    c = run_exam(circ)["All"]
    sub = json.loads((tmp_path / "circ" / "take0" / "subjects" / "logic.json").read_text())
    assert c["num"] == 3 and len(sub["preds"]) == 3 and c["correct"] <= sub["extra"]["correct_unrotated"]
