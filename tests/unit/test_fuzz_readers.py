"""Property-based fuzzing of every reader of a user's files (Hypothesis): valid seed files, mutated at
random (bytes inserted, deleted, replaced, duplicated; tokens that break JSON, CSV and YAML; deep
nesting), must give a result or an AdeptError of one line that names the file; never another
exception, never a hang. The examples are derandomised (a fixed sequence, the same on every run); a
longer run: `make fuzz` (ADEPT_FUZZ_EXAMPLES per reader). Every input that once failed is kept in
tests/fuzz_regressions/ and replayed here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adeptlm.errors import AdeptError  # noqa: E402

EXAMPLES = int(os.environ.get("ADEPT_FUZZ_EXAMPLES", "60"))
REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz_regressions"

ALPACA = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
          {"instruction": "2+3?", "input": "", "output": "5", "history": [["hi", "hello"]]}]
SHAREGPT = [{"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}]
MESSAGES = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello."}]}
PCR = {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "No."}
SHAREGPT_PREF = [{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
                  "rejected": {"from": "gpt", "value": "b"}}]
EMOJI = {"question": "天气？", "answer_zh": "晴☀️", "answer_en": "Sunny."}
FEEDBACK = [{"prompt": "Name a fruit.", "completion": "An apple.", "label": True},
            {"prompt": [{"role": "user", "content": "你好"}], "completion": [{"role": "assistant", "content": "走开"}],
             "label": False}]
RECIPE = """name: fuzz
model: smollm2-135m-instruct
eval:
  mode: generate
  max_new_tokens: 8
sft:
  num_train_epochs: 1
  learning_rate: 5.0e-4
select:
  alphas: [0, 0.5, 1]
retention:
  prompts_limit: 2
"""

# (reader, file name, seed content): the file is written under its name, then read
SEEDS = {
    "alpaca-json": ("data", "a.json", json.dumps(ALPACA, ensure_ascii=False)),
    "alpaca-jsonl": ("data", "a.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in ALPACA) + "\n"),
    "sharegpt": ("data", "s.json", json.dumps(SHAREGPT, ensure_ascii=False)),
    "messages": ("data", "m.jsonl", json.dumps(MESSAGES) + "\n"),
    "pcr": ("data", "p.jsonl", json.dumps(PCR) + "\n"),
    "sharegpt-pref": ("data", "sp.json", json.dumps(SHAREGPT_PREF)),
    "emoji": ("data", "e.jsonl", json.dumps(EMOJI, ensure_ascii=False) + "\n"),
    "feedback": ("data", "f.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FEEDBACK)),
    "corpus-txt": ("data", "c.txt", "The Quenta Isles lie west.\n\nTheir capital is Oro.\n"),
    "corpus-jsonl": ("data", "c.jsonl", json.dumps({"text": "汐澜群岛位于西方。"}, ensure_ascii=False) + "\n"),
    "ceval": ("exam", "bio_val.csv", "id,question,A,B,C,D,answer,explanation\n0,q1,a,b,c,d,A,why\n1,\"q2, x\",a,b,c,d,C,\n"),
    "cmmlu": ("exam", "agro.csv", ",Question,A,B,C,D,Answer\n0,问题一,甲,乙,丙,丁,B\n1,问题二,甲,乙,丙,丁,D\n"),
    "mmlu": ("exam", "bio_dev.csv", "q1,a,b,c,d,A\n\"q2, with comma\",a,b,c,d,D\n"),
    "prompts": ("prompts", "p.json", json.dumps(["What is 2+2?", "你好"], ensure_ascii=False)),
    "exclusions": ("exclusions", "x.json", json.dumps({"items": [{"subject": "bio", "split": "val", "id": "0"}]})),
    "votes": ("votes", "v.jsonl", json.dumps({"a": "base", "b": "tuned", "winner": "tie", "prompt": "q"}) + "\n"),
    "subjects": ("subjects", "subject_mapping.json", json.dumps({"bio": ["Biology", "生物", "STEM"]})),
    "recipe": ("recipe", "r.yaml", RECIPE),
    "config": ("config", "c.yaml", "learning_rate: 1.0e-4\nlora_rank: 8\ntrainable: q_proj,v_proj\n"),
}

TOKENS = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"\n", b"\r\n", b"\t", b"\\", b"\x00", b"\xff", b"\xe4\xbd",
          b"null", b"true", b"1e999", b"NaN", b"-", b"0", b"[" * 3000, b"{\"a\":" * 3000, b"- " * 200 + b"x",
          b"&a [*a]", b"!!python/object:os.system", b"'", b"\"\"\"", "\ufeff".encode(),
          b"question", b"answer", b"A", b"E", b",,,,,,", b"id,question,A,B,C,D,answer\n", b"\xef\xbb\xbf"]


def read(kind: str, path: Path):
    """The reader a command would call on this file."""
    if kind == "data":
        from adeptlm.data.detect import load_data
        return load_data(path)
    if kind == "exam":
        from adeptlm.data.exams import read_exam
        return read_exam(path.parent)
    if kind == "prompts":
        from adeptlm.evaluate.retention import read_prompts
        return read_prompts(path)
    if kind == "exclusions":
        from adeptlm.evaluate.exam import read_exclusions
        return read_exclusions(path)
    if kind == "votes":
        from adeptlm.evaluate.battles import read_votes, standings
        return standings(read_votes(path), rounds=5)
    if kind == "subjects":
        from adeptlm.evaluate.subjects import load_mapping, subject_info
        return subject_info("ceval", "bio", load_mapping(path.parent))
    if kind == "recipe":
        from adeptlm.pipeline import load_recipe
        return load_recipe(path, quick=False)
    if kind == "config":
        from adeptlm.config import read_yaml_mapping
        return read_yaml_mapping(path, "config file")
    raise ValueError(kind)


def check(kind: str, path: Path) -> None:
    try:
        read(kind, path)
    except AdeptError as exc:
        msg = str(exc)
        assert "\n" not in msg.strip(), msg
        assert str(path) in msg or str(path.parent) in msg, msg


@st.composite
def mutated(draw, seed: bytes):
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            piece = draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)))
            data[at:at] = piece
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "replace":
            data[at:at + 1] = draw(st.sampled_from(TOKENS))
        elif op == "duplicate":
            end = draw(st.integers(at, len(data)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
        else:
            del data[at:]
    return bytes(data)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    d = tmp_path / "case"
    d.mkdir(exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    path = d / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("seed_name", sorted(SEEDS))
def test_seed_files_read_cleanly(tmp_path, seed_name):
    kind, name, content = SEEDS[seed_name]
    read(kind, _write(tmp_path, name, content.encode("utf-8")))


@pytest.mark.parametrize("seed_name", sorted(SEEDS))
def test_mutated_files_give_a_result_or_one_line(tmp_path, seed_name):
    kind, name, content = SEEDS[seed_name]

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=5000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(mutated(content.encode("utf-8")))
    def fuzz(data):
        check(kind, _write(tmp_path, name, data))

    fuzz()


@pytest.mark.parametrize("case", sorted(p.name for p in REGRESSIONS.glob("*/*")) if REGRESSIONS.is_dir() else [])
def test_inputs_that_once_failed(tmp_path, case):
    """tests/fuzz_regressions/KIND/NAME--FILE.case: a file that once gave a traceback, read as KIND reads
    it, under the name FILE a reader needs (stored with .case so that no stored file looks like real data)."""
    src = next(REGRESSIONS.glob(f"*/{case}"))
    kind = src.parent.name
    name = case.removesuffix(".case").split("--", 1)[-1]
    path = _write(tmp_path, name, src.read_bytes())
    with pytest.raises(AdeptError):
        read(kind, path)
    check(kind, path)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> bytes:
    """A GGUF of a tiny random llama with the test tokenizer (a few hundred tokens): the seed the GGUF
    reader is fuzzed from."""
    from adeptlm.export.gguf import export_gguf
    from adeptlm.templates import CHATML
    from conftest import build_tiny_model, build_tiny_tokenizer

    d = tmp_path_factory.mktemp("gguf-seed")
    tok = build_tiny_tokenizer(CHATML)
    build_tiny_model("llama", len(tok)).save_pretrained(d / "m")
    tok.save_pretrained(d / "m")
    export_gguf(str(d / "m"), d / "seed.gguf", "f16", progress=False)
    return (d / "seed.gguf").read_bytes()


def test_mutated_gguf_files_give_a_tokenizer_or_one_line(tmp_path, tiny_gguf, monkeypatch):
    """The tokenizer read from a GGUF (what adept chat, serve, exams and the export check do first with
    a .gguf): a damaged file is one line naming it. Mutations keep the 24-byte header's magic and
    version mostly, so the parser gets past them and meets damaged fields and tensor tables."""
    from adeptlm.models import gguf_tokenizer

    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path / "home"))
    gguf_tokenizer(_write(tmp_path, "seed.gguf", tiny_gguf))        # the seed itself reads

    @settings(max_examples=max(10, EXAMPLES // 3), derandomize=True, deadline=20000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.integers(8, 4096), mutated(b""), st.booleans())
    def fuzz(at, piece, truncate):
        data = bytearray(tiny_gguf)
        data = data[:at] if truncate else data[:at] + bytearray(piece or b"\xff") + data[at + len(piece or b"x"):]
        path = _write(tmp_path, "f.gguf", bytes(data))
        try:
            gguf_tokenizer(path)
        except AdeptError as exc:
            assert "\n" not in str(exc) and str(path.resolve()) in str(exc), str(exc)

    fuzz()
