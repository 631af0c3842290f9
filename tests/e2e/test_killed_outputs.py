"""A merge or an export killed with SIGKILL leaves its temporary sibling behind; the next run for the
same output removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_adept

pytestmark = pytest.mark.e2e


def _kill_when(cmd: list[str], appears, timeout: float = 300) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "adeptlm", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not appears():
        time.sleep(0.02)
    assert proc.poll() is None, f"{cmd[0]} ended before its temporary appeared"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _temps(parent, name):
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_killed_export_and_merge_are_cleaned_by_the_rerun(tmp_path):
    out = tmp_path / "m.gguf"
    _kill_when(["export", "gguf", "--outtype", "f16", "--output", str(out)],
               lambda: any(p.stat().st_size > 1 << 20 for p in _temps(tmp_path, "m.gguf")))
    assert _temps(tmp_path, "m.gguf") and not out.exists()
    r = run_adept("export", "gguf", "--outtype", "f16", "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and _temps(tmp_path, "m.gguf") == []

    from peft import LoraConfig, get_peft_model

    from adeptlm.models import load_model
    model, _ = load_model(None)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    merged = tmp_path / "merged"
    _kill_when(["merge", "--lora_model", str(tmp_path / "adapter"), "--output_dir", str(merged)],
               lambda: any(any(p.iterdir()) for p in _temps(tmp_path, "merged") if p.is_dir()))
    assert _temps(tmp_path, "merged")
    r = run_adept("merge", "--lora_model", str(tmp_path / "adapter"), "--output_dir", str(merged))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (merged / "config.json").is_file() and _temps(tmp_path, "merged") == []
