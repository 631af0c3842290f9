"""bench/gpu.py, the check prepared for a GPU loan, run on CPU with its tiny shape so it cannot rot:
both tools train the same random model on the same batches (equal first losses), and the report
holds every figure it promises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_bench_runs_on_cpu_tiny(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--tiny", "--steps", "2",
                           "--tools", "adept,adept-flat,trl", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    runs = {r["tool"]: r for r in report["shapes"]["tiny-llama"]}
    assert set(runs) == {"adept", "adept-flat", "trl"} and report["device_peak_tflops"] > 0
    for r in runs.values():
        assert "error" not in r, r
        assert r["steps"] == 2 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["peak_mb"] > 0
        assert all(math.isfinite(x) for x in r["first_losses"])
    # the same random model and the same first batch: the same first loss (a random model of 512 words: ~ln 512)
    a, t = runs["adept"]["first_losses"][0], runs["trl"]["first_losses"][0]
    assert abs(a - t) < 1e-3 and abs(a - math.log(512)) < 0.5
    # padding-free batches train the same records per step to the same losses
    assert all(abs(x - y) < 1e-4 for x, y in zip(runs["adept-flat"]["first_losses"], runs["adept"]["first_losses"]))
    assert "| tiny-llama | adept |" in proc.stdout and "vs trl" in proc.stdout
