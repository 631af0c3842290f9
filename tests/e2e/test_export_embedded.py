"""The embedded model exported to GGUF and checked against itself in transformers (issue: export)."""

from __future__ import annotations

import json

import pytest

from conftest import run_adept

pytestmark = pytest.mark.e2e
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


def test_f16_tokenizes_and_answers_like_the_hf_model(tmp_path):
    gguf_file = tmp_path / "smollm2-f16.gguf"
    rc = run_adept("export", "gguf", "--outtype", "f16", "--output", str(gguf_file))
    assert rc.returncode == 0, rc.stderr[-2000:]
    rc = run_adept("export", "check", "--gguf", str(gguf_file), "--output_dir", str(tmp_path / "check"))
    assert rc.returncode == 0, rc.stderr[-2000:]
    report = json.loads((tmp_path / "check" / "check.json").read_text())
    assert report["tokenization_texts"] >= 12 and report["tokenization_mismatches"] == []
    assert report["greedy_prompts"] == 20 and report["greedy_identical"] >= 19, rc.stdout
    # logits along the greedy answers: f16 is the same model to within rounding (measured: mean KL 4.6e-6)
    logits = report["logits"]
    assert logits["positions"] > 300 and logits["mean_kl"] < 1e-3 and logits["nmse"] < 1e-4
    assert logits["verdict"].startswith("within the f16-like")


def test_q8_0_exam_accuracy_within_two_points(tmp_path, shared_data):
    gguf_file = tmp_path / "smollm2-q8_0.gguf"
    rc = run_adept("export", "gguf", "--outtype", "q8_0", "--output", str(gguf_file))
    assert rc.returncode == 0, rc.stderr[-2000:]
    rc = run_adept("export", "check", "--gguf", str(gguf_file), "--exam", str(shared_data / "ceval"),
                   "--tokens", "8", "--output_dir", str(tmp_path / "check"))
    assert rc.returncode == 0, rc.stderr[-2000:]
    report = json.loads((tmp_path / "check" / "check.json").read_text())
    exam = report["exam"]
    # 8-bit weights move the logits more than f16 does, within the quantised thresholds
    assert 1e-5 < report["logits"]["mean_kl"] < 5e-2 and report["logits"]["nmse"] < 2e-2
    assert exam["questions"] == 80
    assert abs(exam["difference"]) <= 2.0, rc.stdout
