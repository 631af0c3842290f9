"""The bundled Chinese subject (汐澜群岛): deterministic, readable by adept's own readers, its exam
worded unlike every training sentence, its answers opening with the fact's value, question-answer
text in its corpus, and a general exam large enough that 3 points are seven questions."""

from __future__ import annotations

import json

from adeptlm.data.corpus import read_corpus
from adeptlm.data.exams import read_exam
from adeptlm.data.instructions import read_instructions
from adeptlm.demo.subject_zh import write_subject
from conftest import check_select_exam
from test_demo_subject import digest


def test_same_seed_same_bytes_other_seed_other_facts(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_subject(a, 11)
    write_subject(b, 11)
    write_subject(c, 12)
    assert digest(a) == digest(b) != digest(c)
    assert json.loads((a / "facts.json").read_text()) != json.loads((c / "facts.json").read_text())


def test_files_read_with_adept_readers_and_exam_is_unlike_training(tmp_path):
    summary = write_subject(tmp_path, 11)
    docs = read_corpus(tmp_path / "corpus" / "xilan_isles.txt")
    _, convs = read_instructions(tmp_path / "instructions" / "xilan_isles.json")
    exam, general = read_exam(tmp_path / "exam"), read_exam(tmp_path / "general_exam")
    assert exam.layout == "ceval" and len(docs) == summary["documents"] and len(convs) == summary["instructions"]
    val = [q for s in exam.subjects.values() for q in s["val"]]
    assert len(val) == summary["exam_val"] == 64
    general_val = [q for s in general.subjects.values() for q in s["val"]]
    assert len(general_val) == summary["general_val"] >= 230
    assert all(q.answer in "ABCD" and len(set(q.choices)) == 4 for q in general_val)
    training = "".join(d.text for d in docs) + "".join(m["content"] for c in convs for m in c.messages)
    facts = json.loads((tmp_path / "facts.json").read_text(encoding="utf-8"))
    for q in val:
        stem = q.question.rstrip("？")
        for island in facts:
            stem = stem.replace(island, "")
        assert stem.strip() and stem.strip() not in training, q.question
        assert q.answer in "ABCD" and len(set(q.choices)) == 4
    assert {q.choices["ABCD".index(q.answer)] for q in val} == {v for f in facts.values() for v in f.values()}
    check_select_exam(tmp_path, summary, facts, training, val, "？", "")


def test_answers_open_with_the_value_and_the_corpus_holds_question_answer_text(tmp_path):
    """Every subject answer starts with its fact's value (what the cloze formulation scores where the
    answer turn begins), no answer is a bare letter (no multiple-choice drills), and each fact is
    asked and answered in the corpus too (question-answer text mixed into pre-training)."""
    write_subject(tmp_path, 11)
    facts = json.loads((tmp_path / "facts.json").read_text(encoding="utf-8"))
    _, convs = read_instructions(tmp_path / "instructions" / "xilan_isles.json")
    answers = [c.messages[-1]["content"] for c in convs if not c.messages[0]["content"].startswith("介绍一下")]
    values = {v for f in facts.values() for v in f.values()}
    assert len(answers) == 64 * 4 and all(a.split("。")[0] in values for a in answers)
    assert not any("答案：" in c.messages[0]["content"] for c in convs)
    docs = read_corpus(tmp_path / "corpus" / "xilan_isles.txt")
    qa = "".join(d.text for d in docs if d.text.startswith("问："))
    assert qa.count("问：") == 64 * 4 and all(f"答：{v}。" in qa for v in values)


def test_large_replay_set_is_off_the_general_exam(tmp_path):
    from adeptlm.data.exams import read_exam
    from adeptlm.demo.subject_zh import replay_prompts

    small, large = replay_prompts(), replay_prompts(1000)
    assert large[: len(small)] == small and len(large) == len(set(large)) >= 290
    write_subject(tmp_path, 11)
    exam = read_exam(tmp_path / "general_exam")
    questions = {q.question for s in exam.subjects.values() for split in s.values() for q in split}
    assert not questions & set(large)
    # arithmetic is asked as word problems, never in the exam's “a加b等于多少？” form
    assert not any("等于多少" in p for p in large)
