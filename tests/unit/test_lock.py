"""One process at a time per run directory: a live holder is refused in one line that names it, from
adept run and from a training stage's command line; a holder killed with SIGKILL leaves nothing that
stops the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from adeptlm.errors import AdeptError
from adeptlm.lock import LOCK_NAME, hold
from conftest import ROOT, run_adept

HOLDER = """
import sys, time
from pathlib import Path
from adeptlm.lock import hold
with hold(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def start_holder(directory, what: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), what], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_refused_and_a_killed_one_is_taken_over(tmp_path):
    proc = start_holder(tmp_path / "run", "adept run demo")
    try:
        with pytest.raises(AdeptError, match=rf"run: in use by adept run demo \(pid {proc.pid} on "):
            with hold(tmp_path / "run", "adept run demo"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with hold(tmp_path / "run", "adept run demo"):       # the kernel released the dead holder's lock
        assert str(os.getpid()) in (tmp_path / "run" / LOCK_NAME).read_text()
    with hold(tmp_path / "run", "again"):                 # and this process released its own
        pass


def test_commands_refuse_a_held_directory_in_one_line(tmp_path, tiny_model_dir):
    root = tmp_path / "runs" / "quenta-demo-quick"
    proc = start_holder(root, "adept run quenta-demo-quick")
    out = tmp_path / "sft"
    trainer = start_holder(out, "adept sft")
    try:
        rc = run_adept("run", "--quick", "--output_dir", str(tmp_path / "runs"))
        assert rc.returncode == 2 and rc.stderr.strip().count("\n") == 0, rc.stderr
        assert f"in use by adept run quenta-demo-quick (pid {proc.pid}" in rc.stderr
        assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]      # nothing written by the refused run
        rc = run_adept("sft", "--model_name_or_path", str(tiny_model_dir), "--dataset_dir", str(tmp_path),
                       "--output_dir", str(out), "--max_steps", "1")
        assert rc.returncode == 2 and rc.stderr.strip().count("\n") == 0, rc.stderr
        assert f"in use by adept sft (pid {trainer.pid}" in rc.stderr
    finally:
        for p in (proc, trainer):
            p.send_signal(signal.SIGKILL)
            p.wait()
