"""The real C-Eval, CMMLU and MMLU slices end to end on the embedded model."""

from __future__ import annotations

import json

import pytest

from conftest import run_adept

pytestmark = pytest.mark.e2e


def test_ceval_val_five_shot_and_test_submission(shared_data, tmp_path):
    out = tmp_path / "ceval"
    res = run_adept("eval", "ceval", "--data_dir", str(shared_data / "ceval"), "--output_dir", str(out),
                    "--few_shot", "True", "--ntrain", "5", "--do_save_csv", "True")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["All"]["num"] == 80
    for subject in ("basic_medicine", "high_school_geography", "high_school_physics", "modern_chinese_history"):
        assert set(summary[subject]) == {"score", "num", "correct"}
        assert summary[subject]["score"] == pytest.approx(100 * summary[subject]["correct"] / summary[subject]["num"], abs=1e-3)
    assert set(summary["grouped"]) == {"STEM", "Social Science", "Humanities", "Other"}
    assert 0 <= summary["All"]["score"] <= 100
    test_out = tmp_path / "ceval-test"
    res = run_adept("eval", "ceval", "--data_dir", str(shared_data / "ceval"), "--output_dir", str(test_out),
                    "--do_test", "True", "--few_shot", "False", "--limit", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    sub = json.loads((test_out / "take0" / "submission.json").read_text())
    assert len(sub) == 4 and all(len(v) == 20 for v in sub.values())
    assert "no gold answers" in res.stdout


@pytest.mark.parametrize("cmd,name,num", [("cmmlu", "cmmlu", 90), ("mmlu", "mmlu", 32)])
def test_cmmlu_and_mmlu(shared_data, tmp_path, cmd, name, num):
    out = tmp_path / name
    args = ["eval", cmd, "--data_dir", str(shared_data / name), "--output_dir", str(out), "--batch_size", "8"]
    if cmd == "cmmlu":
        args += ["--few_shot", "False", "--limit", "30"]  # 3 subjects x 30 keeps CI short
    res = run_adept(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["All"]["num"] == num


def test_with_prompt_and_generate_modes_run(shared_data, tmp_path):
    for mode in ("cloze", "generate"):
        out = tmp_path / mode
        res = run_adept("eval", "exam", "--data", str(shared_data / "mmlu"), "--output_dir", str(out),
                        "--with_prompt", "True", "--mode", mode, "--limit", "4", "--max_new_tokens", "8",
                        "--ntrain", "1")
        assert res.returncode == 0, res.stderr[-3000:]
        run = json.loads((out / "run.json").read_text())
        assert run["protocol"]["mode"] == mode and run["protocol"]["template"] == "tokenizer"
