"""The bundled Chinese subject (汐澜群岛): deterministic, readable by adept's own readers, its exam
worded unlike every training sentence, its drills asked exactly as the exam asks, and a general exam
large enough that one question is under a point."""

from __future__ import annotations

import json

from adeptlm.data.corpus import read_corpus
from adeptlm.data.exams import read_exam
from adeptlm.data.instructions import read_instructions
from adeptlm.demo.subject_zh import CATEGORIES, drill_prompt, write_subject
from adeptlm.evaluate.prompts import format_question, header
from adeptlm.evaluate.subjects import load_mapping, subject_info
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
    assert len(general_val) == summary["general_val"] >= 100
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


def test_drills_are_asked_as_the_exam_asks(tmp_path):
    write_subject(tmp_path, 11)
    exam = read_exam(tmp_path / "exam")
    mapping = load_mapping(tmp_path / "exam")
    for cat, (subject, display, _) in CATEGORIES.items():
        q = exam.subjects[subject]["val"][0]
        info = subject_info("ceval", subject, mapping)
        assert info.display == display
        # the exam's zero-shot user turn is header + question; a drill is built the same way
        assert drill_prompt(cat, q.question, q.choices) == header("ceval", info) + format_question("ceval", q)
    _, convs = read_instructions(tmp_path / "instructions" / "xilan_isles.json")
    drills = [c for c in convs if "答案：" in c.messages[0]["content"]]
    assert len(drills) == 2 * 64
    letters = [c.messages[-1]["content"][0] for c in drills]
    assert set(letters) == set("ABCD") and max(letters.count(x) for x in "ABCD") < 0.4 * len(drills)
