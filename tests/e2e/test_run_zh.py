"""`adept run xilan-zh --quick`: the Chinese recipe on gemma3-270m end to end, every stage finished,
the exams asked as the seed's C-Eval evaluator asks and in the cloze formulation, the report with each exam's uncertainty, and
the q8_0 GGUF tokenizing the check's sample exactly as transformers."""

from __future__ import annotations

import json

import pytest

from adeptlm.models import KNOWN_MODELS, is_installed
from adeptlm.runrecord import read_run
from conftest import run_adept

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not is_installed("gemma3-270m"), reason=KNOWN_MODELS["gemma3-270m"].install)]


def test_chinese_recipe_quick(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    r = run_adept("run", "xilan-zh", "--quick", "--output_dir", str(tmp_path), timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    root = tmp_path / "xilan-zh-quick"
    for stage in ("data", "contamination", "baseline", "replay", "sft", "select", "merge", "after", "retention", "export", "check",
                  "report"):
        assert read_run(root / stage) is not None, stage
    protocol = json.loads((root / "after" / "exam" / "run.json").read_text())["config"]
    assert (protocol["mode"], protocol["prompt_style"], protocol["with_prompt"]) == ("both", "ceval", True)
    assert protocol["few_shot"] is False
    check = read_run(root / "check")["metrics"]
    assert check["tokenization_mismatches"] == [] and check["tokenization_texts"] >= 17
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "- Subject exam (" in report and "95% interval" in report and "Held-out subject perplexity" in report
    # both formulations before and after, read in the one the base model answered more in
    form = read_run(root / "baseline")["metrics"]["read_formulation"]
    assert form in ("letter", "cloze") and f"- Subject exam ({form} formulation" in report
    assert "## Formulations" in report and "## Selection: gain against forgetting" in report
