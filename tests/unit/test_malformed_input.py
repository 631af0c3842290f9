"""Bad input stops with exit status 2 and one line naming the file and the line, never a traceback."""

from __future__ import annotations

import json

import pytest

from conftest import run_adept

ALPACA_OK = '{"instruction": "Say hi", "input": "", "output": "Hi"}'

# (case name, file name, content, expected line, expected text in the message)
CASES = [
    ("json-array-invalid", "a.json", '[\n' + ALPACA_OK + ',\n{"instruction": "x" "output": "y"}\n]', 3,
     "invalid JSON"),
    ("jsonl-invalid", "a.jsonl", ALPACA_OK + "\n{not json}\n", 2, "invalid JSON"),
    ("array-not-closed", "a.json", "[\n" + ALPACA_OK + "\n", 3, "not closed"),
    ("array-empty", "a.json", "[\n]\n", 2, "empty"),
    ("record-not-object", "a.json", '[\n' + ALPACA_OK + ',\n"just a string"\n]', 3, "JSON object"),
    ("alpaca-missing-output", "a.json", '[\n' + ALPACA_OK + ',\n{"instruction": "x", "input": ""}\n]', 3,
     "'output'"),
    ("alpaca-empty-instruction", "a.jsonl", ALPACA_OK + '\n\n{"instruction": "  ", "output": "y"}\n', 3,
     "'instruction'"),
    ("alpaca-instruction-number", "a.jsonl", '{"instruction": 5, "output": "y"}\n', 1, "expected a string"),
    ("alpaca-bad-history", "a.jsonl", '{"instruction": "q", "output": "a", "history": [["only one"]]}\n', 1,
     "'history'"),
    ("messages-bad-role", "m.jsonl", '{"messages": [{"role": "robot", "content": "x"}]}\n', 1, "'robot'"),
    ("messages-not-alternating", "m.jsonl",
     '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n', 1, "alternate"),
    ("messages-end-with-user", "m.jsonl",
     '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
     '{"role": "user", "content": "c"}]}\n', 1, "last turn"),
    ("messages-missing-content", "m.jsonl", '{"messages": [{"role": "user"}]}\n', 1, "'content'"),
    ("sharegpt-bad-from", "s.json",
     '[{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}]', 1, "'bot'"),
    ("preference-chosen-not-object", "p.json",
     '[\n {"conversations": [{"from": "human", "value": "q"}], "chosen": "x", "rejected": {"from": "gpt", '
     '"value": "y"}}\n]', 2, "'chosen'"),
    ("pcr-missing-rejected", "p.jsonl", '{"prompt": "q", "chosen": "a", "rejected": ""}\n', 1, "'rejected'"),
    ("emoji-empty-answer", "e.jsonl",
     '{"question": "q", "answer_zh": "好😀", "answer_en": "ok"}\n{"question": "q2", "answer_zh": "", '
     '"answer_en": "no"}\n', 2, "'answer_zh'"),
    ("mixed-shapes", "a.jsonl", ALPACA_OK + '\n{"messages": [{"role": "user", "content": "a"}, '
     '{"role": "assistant", "content": "b"}]}\n', 2, "shape"),
    ("corpus-text-not-string", "c.jsonl", '{"text": "fine"}\n{"text": ["a", "list"]}\n', 2, "'text'"),
    ("json-not-utf8", "a.jsonl", ALPACA_OK.encode() + b'\n' + ALPACA_OK.encode() + b'\n{"instruction": "\xff\xfe", '
     b'"output": "y"}\n', 3, "UTF-8"),
    ("csv-not-utf8", "x_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n".encode() + b"1,\xe4\xbd,a,b,c,d,B\n",
     3, "UTF-8"),
    ("ceval-answer-outside", "bio_val.csv", "id,question,A,B,C,D,answer\n0,q1,a,b,c,d,A\n1,q2,a,b,c,d,E\n", 3,
     "not one of A, B, C, D"),
    # a gap in the option columns (A, C, D): three options alone would be a valid three-option exam
    ("ceval-wrong-columns", "bio_val.csv", "id,question,A,C,D,answer\n0,q1,a,c,d,A\n", 1, "missing B"),
    ("ceval-one-option", "bio_val.csv", "id,question,A,answer\n0,q1,a,A\n", 1, "missing B, C, D"),
    ("mmlu-one-option", "bio_dev.csv", "q1,a,A\n", 1, "2 to 10 options"),
    # no header: the width most rows have sets the options, so an odd first row is the one named
    ("mmlu-wide-first-row", "bio_dev.csv", "q1,a,b,c,d,e,A\nq2,a,b,c,d,B\nq3,a,b,c,d,C\n", 1,
     "7, expected 6 cells: question,A,B,C,D,answer"),
    ("ceval-val-missing-answer", "bio_val.csv", "id,question,A,B,C,D,answer\n0,q1,a,b,c,d,\n", 2, "missing answer"),
    ("mmlu-short-row", "bio_dev.csv", "q1,a,b,c,d,A\n\"q2, with comma\",a,b,c,D\n", 2, "wrong number of CSV cells"),
    ("cmmlu-short-row", "agro.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,\"multi\nline\",a,b,c\n", 3,
     "wrong number of CSV cells"),
    ("exam-empty-question", "x_dev.csv", "id,question,A,B,C,D,answer\n0, ,a,b,c,d,A\n", 2, "empty question"),
    ("empty-json-file", "a.json", "  \n", None, "empty file"),
    ("empty-txt-file", "c.txt", "\n\n", None, "empty file"),
    ("empty-csv-file", "x_val.csv", "", None, "empty file"),
    ("csv-header-only", "x_val.csv", "id,question,A,B,C,D,answer\n", None, "no questions"),
    ("unsupported-suffix", "a.yaml", "x: 1\n", None, "unsupported file type"),
]


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize("name,fname,content,line,text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(tmp_path, name, fname, content, line, text):
    path = _write(tmp_path, fname, content)
    res = run_adept("data", "check", str(path))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and not res.stdout
    msg = lines[0]
    assert str(path) in msg
    assert text in msg
    if line is not None:
        assert f"{path}:{line}:" in msg


def test_empty_directory(tmp_path):
    res = run_adept("data", "check", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "empty directory" in res.stderr and str(tmp_path) in res.stderr


def test_directory_with_mixed_kinds_names_the_odd_file(tmp_path):
    _write(tmp_path, "a.json", "[" + ALPACA_OK + "]")
    _write(tmp_path, "b.jsonl", json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    res = run_adept("data", "check", str(tmp_path))
    assert res.returncode == 2 and "b.jsonl" in res.stderr and res.stderr.count("\n") == 1


def test_unknown_model_is_one_line(tmp_path):
    path = _write(tmp_path, "a.json", "[" + ALPACA_OK + "]")
    res = run_adept("data", "check", str(path), "--model", "no-such-model-anywhere")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unknown model 'no-such-model-anywhere'" in res.stderr
    assert "never downloads" in res.stderr


def test_debug_shows_traceback(tmp_path):
    path = _write(tmp_path, "a.jsonl", "{bad\n")
    res = run_adept("--debug", "data", "check", str(path))
    assert res.returncode != 0 and "Traceback" in res.stderr
