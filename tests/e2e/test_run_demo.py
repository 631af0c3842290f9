"""`adept run --quick` on the embedded model: killed during training and run again, it completes
without redoing finished stages; its report renders in headless Chromium with the gain table and
charts visible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adeptlm.runrecord import read_run
from conftest import ROOT, find_chromium

pytestmark = pytest.mark.e2e


def _wait_for(predicate, proc, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"adept run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, "-m", "adeptlm", "run", "--quick", "--output_dir", str(out)]
    root = out / "quenta-demo-quick"
    log1 = open(out / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    # kill the whole process group (adept run and its training child) once SFT has a checkpoint
    _wait_for(lambda: any((root / "sft").glob("checkpoint-*/trainer_state.json")), proc, 900,
              "an SFT checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log1.close()
    assert read_run(root / "sft") is None, "SFT finished before it could be killed"
    stamps = {s: (root / s / "run.json").stat().st_mtime_ns for s in ("data", "baseline", "replay", "pt")}
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return root, stamps, second.stdout + second.stderr


def test_rerun_skips_finished_stages_and_resumes_training(quick_run):
    root, stamps, output = quick_run
    for stage in ("data", "baseline", "replay", "pt"):
        assert f"{stage}: finished earlier, skipped" in output
        assert (root / stage / "run.json").stat().st_mtime_ns == stamps[stage], stage
    assert "resuming from" in output and "checkpoint-" in output
    for stage in ("sft", "select", "merge", "after", "export", "check", "report"):
        assert read_run(root / stage) is not None, stage
    # the merged model is the selection's choice, at its scale
    chosen = read_run(root / "select")["metrics"]
    assert [c["name"] for c in chosen["candidates"]][:2] == ["alpha=0.00", "alpha=1.00"]
    assert read_run(root / "merge")["config"]["alpha"] == chosen["alpha"]
    assert read_run(root / "merge")["config"]["lora_model"] == [chosen["adapter"]]
    assert (root / "report.md").is_file() and (root / "report.html").is_file()
    replay = read_run(root / "replay")["metrics"]
    assert replay["prompts"] == 8 and replay["records"] >= 1
    # the replay answers are distilled (replay: {distill: W}), not trained on as words
    sft = read_run(root / "sft")
    assert sft["config"]["distill_file"] == str(root / "replay" / "general_replay.json")
    assert sft["data"]["records"] == 200 and sft["data"]["distilled_records"] == replay["records"]
    assert sft["data"]["train_records"] == 200 + replay["records"]
    assert not (root / "sft-data" / "general_replay.json").exists()
    md = (root / "report.md").read_text()
    # eval.also: letter and cloze beside the generate headline, before and after
    for f in ("letter", "cloze"):
        assert (root / "after" / "exam" / f / "summary.json").is_file()
        assert any(x.startswith(f"| Subject exam | {f}") for x in md.splitlines()), f
    assert "| Subject exam | generate **read**" in md
    assert "Subject exam" in md and "General exam" in md and "GGUF check" in md
    # each stage's figures: the run.json figure is its exam's own summary, and the report states them
    for exam in ("exam", "general_exam"):
        before, after = (read_run(root / s)["metrics"][exam] for s in ("baseline", "after"))
        for stage, score in (("baseline", before), ("after", after)):
            summary = json.loads((root / stage / exam / "summary.json").read_text())["All"]
            assert score == summary["score"] == pytest.approx(100 * summary["correct"] / summary["num"], abs=1e-3)
        assert summary["num"] == 2 * summary["subjects"]      # quick: eval limit 2 per subject
    before, after = (read_run(root / s)["metrics"]["exam"] for s in ("baseline", "after"))
    assert f"Subject exam: {before:.1f}% → {after:.1f}% ({after - before:+.1f} points" in md
    retention = read_run(root / "retention")["metrics"]
    assert retention["greedy"]["prompts"] == 2 and 0 <= retention["greedy"]["same_answers"] <= 2
    assert retention["text"]["tokens"] > 0 and retention["text"]["mean_kl"] >= 0
    export = read_run(root / "export")
    assert export["metrics"]["bytes"] == Path(export["gguf"]).stat().st_size and export["metrics"]["tensors"] == 272
    check = read_run(root / "check")["metrics"]
    assert check["tokenization_mismatches"] == [] and check["greedy_prompts"] >= 1
    base = read_run(root / "select")["metrics"]["candidates"][0]
    assert base["alpha"] == 0 and base["mean_kl"] == 0 and base["same_answers"] == base["prompts"]
    assert "## Selection: gain against forgetting" in md and "subject exam played no part in choosing" in md


def test_report_renders_in_headless_chromium(quick_run, tmp_path):
    root, _, _ = quick_run
    chromium = find_chromium()
    if not chromium:
        pytest.skip("Chromium is not installed and could not be installed (apt-get as root)")
    shot = tmp_path / "report.png"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1000,2600"]
    subprocess.run(args + [f"--screenshot={shot}", (root / "report.html").as_uri()], capture_output=True,
                   timeout=180)
    assert shot.is_file()
    dom = subprocess.run(args + ["--dump-dom", (root / "report.html").as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    assert "id=\"gain-table\"" in dom and "id=\"chart-subject\"" in dom and "id=\"chart-general\"" in dom
    # visible: the screenshot holds the charts' bar colours and dark table text on the white page
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    blue = sum(n for n, (r, g, b) in colours if abs(r - 0x1f) < 12 and abs(g - 0x77) < 12 and abs(b - 0xb4) < 12)
    grey = sum(n for n, (r, g, b) in colours if abs(r - 0x9a) < 8 and abs(g - 0xa5) < 8 and abs(b - 0xb1) < 8)
    dark = sum(n for n, (r, g, b) in colours if r < 80 and g < 80 and b < 80)
    assert blue > 2000 and grey > 2000 and dark > 2000, (blue, grey, dark)
