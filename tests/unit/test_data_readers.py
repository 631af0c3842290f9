"""Readers against the real public data samples and small hand-written files."""

from __future__ import annotations

import csv
import json

import pytest

from adeptlm.data.corpus import read_corpus
from adeptlm.data.detect import load_data
from adeptlm.data.exams import read_exam
from adeptlm.data.instructions import read_instructions
from adeptlm.data.preferences import read_preferences
from conftest import run_adept


def csv_rows(path, header: bool) -> int:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    return len(rows) - (1 if header else 0)


@pytest.mark.parametrize("name,layout,header", [("ceval", "ceval", True), ("cmmlu", "cmmlu", True),
                                                ("mmlu", "mmlu", False)])
def test_real_exams_count_every_question(shared_data, name, layout, header):
    root = shared_data / name
    exam = read_exam(root)
    assert exam.layout == layout
    files = sorted(root.glob("*/*.csv"))
    assert sum(len(s) for s in exam.subjects.values()) == len(files)
    assert exam.count() == sum(csv_rows(f, header) for f in files)
    for subject, splits in exam.subjects.items():
        for split, questions in splits.items():
            for q in questions:
                assert len(q.choices) == 4 and q.question
                if layout == "ceval" and split == "test":
                    assert q.answer is None
                else:
                    assert q.answer in "ABCD"


def test_ceval_keeps_latex_and_commas(shared_data):
    exam = read_exam(shared_data / "ceval")
    texts = [q.question + "".join(q.choices) for s in exam.subjects.values() for qs in s.values() for q in qs]
    assert any("$" in t for t in texts)  # LaTeX survives
    assert any("," in t or "，" in t for t in texts)


@pytest.mark.parametrize("fname,kind,shape", [("instructions/alpaca_zh_demo.json", "instructions", "alpaca"),
                                              ("instructions/ruozhiba_qa2449_gpt4o.json", "instructions", "alpaca"),
                                              ("preferences/dpo_zh_demo.json", "preferences", "sharegpt")])
def test_real_json_files(shared_data, fname, kind, shape):
    path = shared_data / fname
    raw = json.loads(path.read_text(encoding="utf-8"))
    loaded = load_data(path)
    assert (loaded.kind, loaded.shape) == (kind, shape)
    assert len(loaded.records) == len(raw)
    lines = path.read_text(encoding="utf-8").splitlines()
    for rec in loaded.records[:50]:
        line = int(rec.source.rsplit(":", 1)[1])
        assert lines[line - 1].strip().startswith("{")  # the source points at the record's first line
    if kind == "instructions":
        first = raw[0]
        user = first["instruction"] + ("\n" + first["input"] if first["input"].strip() else "")
        assert loaded.records[0].messages == [{"role": "user", "content": user},
                                              {"role": "assistant", "content": first["output"]}]
    else:
        assert loaded.records[0].chosen == raw[0]["chosen"]["value"]
        assert loaded.records[0].rejected == raw[0]["rejected"]["value"]
        assert loaded.records[0].prompt[-1]["role"] == "user"


def test_alpaca_with_system_history_and_input(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"system": "S", "history": [["q0", "a0"]], "instruction": "q1", "input": "ctx",
                             "output": "a1"}) + "\n", encoding="utf-8")
    shape, convs = read_instructions(p)
    assert shape == "alpaca"
    assert convs[0].messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "q0"},
                                 {"role": "assistant", "content": "a0"}, {"role": "user", "content": "q1\nctx"},
                                 {"role": "assistant", "content": "a1"}]


def test_sharegpt_and_messages_normalise_alike(tmp_path):
    a = tmp_path / "s.json"
    a.write_text(json.dumps([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                              "system": "S"}]), encoding="utf-8")
    b = tmp_path / "m.jsonl"
    b.write_text(json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                          {"role": "assistant", "content": "a"}]}), encoding="utf-8")
    assert read_instructions(a)[1][0].messages == read_instructions(b)[1][0].messages
    assert read_instructions(a)[0] == "sharegpt" and read_instructions(b)[0] == "messages"


def test_preference_shapes(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "good"}],
         "rejected": [{"role": "assistant", "content": "bad"}]},
        {"prompt": "q2", "chosen": "good2", "rejected": "bad2"},
    ]), encoding="utf-8")
    shape, pairs = read_preferences(p)
    assert shape == "pcr" and [(x.chosen, x.rejected) for x in pairs] == [("good", "bad"), ("good2", "bad2")]
    e = tmp_path / "emoji.jsonl"
    e.write_text(json.dumps({"question": "你好吗", "answer_zh": "很好😀", "answer_en": "Fine"}, ensure_ascii=False),
                 encoding="utf-8")
    shape, pairs = read_preferences(e)
    assert shape == "emoji" and pairs[0].chosen == "很好😀" and pairs[0].rejected == "Fine"
    assert pairs[0].prompt == [{"role": "user", "content": "你好吗"}]


def test_corpus_txt_dir_and_jsonl(tmp_path):
    (tmp_path / "b.txt").write_text("Second file.\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("Doc one,\nline two.\n\n\nDoc two.\n", encoding="utf-8")
    docs = read_corpus(tmp_path)
    assert [d.text for d in docs] == ["Doc one,\nline two.", "Doc two.", "Second file."]
    assert docs[1].source.endswith("a.txt:5")
    j = tmp_path / "c.jsonl"
    j.write_text('{"text": "x"}\n{"text": "y", "meta": 1}\n', encoding="utf-8")
    assert load_data(j).kind == "corpus" and len(load_data(j).records) == 2


@pytest.mark.parametrize("sub,kind,count", [("ceval", "C-Eval layout", 840), ("cmmlu", "CMMLU layout", 622),
                                            ("mmlu", "MMLU layout", 42)])
def test_data_check_cli_on_real_exams(shared_data, sub, kind, count):
    res = run_adept("data", "check", str(shared_data / sub))
    assert res.returncode == 0, res.stderr
    assert f"multiple-choice exam ({kind}" in res.stdout
    assert f"count:    {count} questions" in res.stdout
    # the counts above are the real files' own: recount them independently
    header = sub != "mmlu"
    assert count == sum(csv_rows(f, header) for f in (shared_data / sub).glob("*/*.csv"))
