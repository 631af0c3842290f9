"""Outputs written beside their target and renamed when complete, and the leftovers of killed runs.

A writer builds `.NAME.tmp-PID` (or a scratch `.NAME.f16-PID-...`) next to NAME and renames it onto
NAME when it is whole, so nothing that looks finished is ever half-written. A run killed with
SIGKILL cannot remove its temporary, so the next run for the same target removes every sibling
whose PID is no longer alive (a live one belongs to a concurrent run and is left alone).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import AdeptError


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
            _remove(p)
            removed.append(p)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def replace(tmp: Path, target: Path, keep_existing: bool = False) -> None:
    """Rename tmp onto target; an existing directory is moved aside first (a rename cannot replace a
    non-empty directory) and removed once the new one is in place.

    keep_existing=True is for content-addressed outputs that concurrent processes may build at once
    (every rank of a multi-node run tokenizing into one shared cache): the first rename wins, and a
    later writer drops its own copy instead of moving aside a directory another process may be
    reading."""
    if keep_existing:
        try:
            os.rename(tmp, target)  # fails on a non-empty directory: a rename never swaps it out
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR) or not target.exists():
                raise
            _remove(tmp)
        return
    if target.is_dir() and not target.is_symlink():
        trash = temp_sibling(target, "old")
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


FULL = (errno.ENOSPC, errno.EDQUOT)


def _size(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def check_space(target: Path, need: int) -> None:
    """Stop before a large write that the target's filesystem has no room for."""
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise AdeptError(f"{target}: not enough disk space: about {_size(need)} needed, {_size(free)} free on "
                         f"{target.parent}; free some space or write elsewhere")


@contextmanager
def atomic_output(target: Path | str, kind: str = "tmp", directory: bool = False,
                  keep_existing: bool = False, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of target to write (a file, or a directory made here when
    directory=True); it is renamed onto target when the block ends and removed if the block raises.
    Temporaries of the same target left by killed runs are removed first. keep_existing: see replace.
    need: the bytes the write will take, checked against the free space first; a disk that fills up
    anyway (ENOSPC, EDQUOT) stops with one line naming the target, after the temporary is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    if need:
        check_space(target, need)
    tmp = temp_sibling(target, kind)
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        replace(tmp, target, keep_existing)
    except OSError as exc:
        _remove(tmp)
        if exc.errno not in FULL:
            raise
        free = shutil.disk_usage(target.parent).free
        needed = f"about {_size(need)} needed, " if need else ""
        raise AdeptError(f"{target}: the disk filled up while writing ({exc.strerror}): {needed}{_size(free)} free "
                         f"on {target.parent} once the partial output was removed; nothing was written") from None
    except BaseException:
        _remove(tmp)
        raise


def write_text(target: Path | str, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
