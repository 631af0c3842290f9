"""The bundled subject: deterministic, readable by adept's own readers, and exam questions worded
unlike every training sentence."""

from __future__ import annotations

import hashlib
import json

from adeptlm.data.corpus import read_corpus
from adeptlm.data.exams import read_exam
from adeptlm.data.instructions import read_instructions
from adeptlm.demo.subject import GENERAL_EXAM, replay_prompts, write_subject
from conftest import check_select_exam


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_facts(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_subject(a, 7)
    write_subject(b, 7)
    write_subject(c, 8)
    assert digest(a) == digest(b) != digest(c)
    assert json.loads((a / "facts.json").read_text()) != json.loads((c / "facts.json").read_text())


def test_files_read_with_adept_readers_and_exam_is_unlike_training(tmp_path):
    summary = write_subject(tmp_path, 7)
    docs = read_corpus(tmp_path / "corpus" / "quenta_isles.txt")
    _, convs = read_instructions(tmp_path / "instructions" / "quenta_isles.json")
    exam = read_exam(tmp_path / "exam")
    general = read_exam(tmp_path / "general_exam")
    assert exam.layout == "ceval" and len(docs) == summary["documents"] and len(convs) == summary["instructions"]
    val = [q for s in exam.subjects.values() for q in s["val"]]
    assert len(val) == summary["exam_val"] == 64
    assert len([q for s in general.subjects.values() for q in s["val"]]) == summary["general_val"]
    training = " ".join(d.text for d in docs) + " ".join(m["content"] for c in convs for m in c.messages)
    facts = json.loads((tmp_path / "facts.json").read_text())
    for q in val:
        stem = q.question.rstrip("?.")
        for island in facts:
            stem = stem.replace(island, "")
        # no exam question (islands removed) appears as a phrase in the training text
        assert stem.strip() and stem.strip() not in training, q.question
        assert q.answer in "ABCD" and len(set(q.choices)) == 4
    # every fact is asked once in val; the answer is the fact
    answers = {q.choices["ABCD".index(q.answer)] for q in val}
    assert answers == {v for f in facts.values() for v in f.values()}
    check_select_exam(tmp_path, summary, facts, training, val, "?.", " ")


def test_replay_questions_are_not_on_the_general_exam():
    prompts = replay_prompts()
    assert len(prompts) == len(set(prompts)) >= 40
    asked = " ".join(prompts).lower()
    for _, question, _, _ in GENERAL_EXAM:
        assert question.lower().rstrip("?") not in asked, question


def test_large_replay_set_is_general_and_off_the_exam():
    """`replay: {volume: N}`: the bundled prompts first, then a few hundred more, none a general exam
    question (they are also the retention prompts) and none about the subject."""
    small, large = replay_prompts(), replay_prompts(1000)
    assert large[: len(small)] == small and len(large) == len(set(large)) >= 300
    assert replay_prompts(100) == large[:100]
    asked = {p.lower().rstrip("?") for p in large}
    for _, question, _, _ in GENERAL_EXAM:
        assert question.lower().rstrip("?") not in asked, question
    assert not any("quenta" in p.lower() for p in large)
