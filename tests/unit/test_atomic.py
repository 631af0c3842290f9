"""Stale temporaries: a dead run's are removed, a live run's and other targets' are kept."""

from __future__ import annotations

import subprocess
import sys

from adeptlm.atomic import remove_stale


def test_a_live_process_temporary_is_kept(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        keep = tmp_path / f".out.gguf.tmp-{live.pid}"
        keep.write_text("x")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        stale = tmp_path / f".out.gguf.tmp-{int(dead.stdout)}"
        stale.write_text("x")
        other = tmp_path / ".other.gguf.tmp-1"
        other.write_text("x")
        assert remove_stale(tmp_path / "out.gguf") == [stale]
        assert keep.exists() and other.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()
