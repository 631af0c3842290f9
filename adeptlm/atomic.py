"""Outputs written beside their target and renamed when complete, and the leftovers of killed runs.

A writer builds `.NAME.tmp-PID` (or a scratch `.NAME.f16-PID-...`) next to NAME and renames it onto
NAME when it is whole, so nothing that looks finished is ever half-written. A run killed with
SIGKILL cannot remove its temporary, so the next run for the same target removes every sibling
whose PID is no longer alive (a live one belongs to a concurrent run and is left alone).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def temp_sibling(target: Path, kind: str = "tmp") -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has not started writing yet: anything under its PID is stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Remove temporaries of `target` left by runs that are no longer alive; returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9]+-(\d+)(?:-.*)?")
    removed = []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed
