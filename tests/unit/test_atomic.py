"""Atomic outputs: whole or absent, an existing directory replaced; stale temporaries of dead runs
removed, a live run's and other targets' kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from adeptlm.atomic import atomic_output, remove_stale, replace, write_text


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


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_output(target) as tmp:
        tmp.write_text("half")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_text() == "half"
    write_text(target, "whole")
    assert target.read_text() == "whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, directory=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("killed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_an_existing_directory_is_replaced_and_a_dead_runs_temporary_removed(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    stale = tmp_path / f".model.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "part").write_text("x")
    with atomic_output(target, directory=True) as tmp:
        assert tmp.name == f".model.tmp-{os.getpid()}"
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_keep_existing_lets_the_first_of_two_concurrent_writers_win(tmp_path):
    """Two ranks building one content-addressed cache on a shared disk: the one that finishes second
    neither fails (a rename onto a non-empty directory) nor swaps out the copy the first is reading.
    CI failed here once, when two torchrun nodes tokenized into one data_cache."""
    target = tmp_path / "sft-cache"
    first, second = tmp_path / ".sft-cache.tmp-1", tmp_path / ".sft-cache.tmp-2"
    for d in (first, second):
        d.mkdir()
        (d / "data").write_text(d.name)
    replace(first, target, keep_existing=True)
    inode = target.stat().st_ino
    replace(second, target, keep_existing=True)
    assert (target / "data").read_text() == first.name
    assert target.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["sft-cache"]
    with pytest.raises(OSError):  # any other failure still raises
        replace(tmp_path / "missing", tmp_path / "elsewhere", keep_existing=True)


def test_without_keep_existing_a_second_writer_replaces(tmp_path):
    target = tmp_path / "out"
    for text in ("a", "b"):
        with atomic_output(target, directory=True) as tmp:
            (tmp / "data").write_text(text)
    assert (target / "data").read_text() == "b"
