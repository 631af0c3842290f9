"""One process at a time per run directory.

`adept run` holds its run directory and a training stage its output directory, through an advisory
lock (flock) on a small file inside it that names the holder. The kernel releases the lock when the
holder exits in any way, kill -9 included, so a lock is never stale: the file may stay behind, but
the next run takes it over. Only the main process of a distributed run takes the lock (its other
ranks write into the same directory under it).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import AdeptError

LOCK_NAME = ".adept-lock"


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def hold(directory: Path, what: str):
    """Hold `directory` for the length of the block; refuse with one line if another process holds it."""
    if not _is_main_rank():
        yield
        return
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    f = open(directory / LOCK_NAME, "a+", encoding="utf-8")
    held = False
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise AdeptError(f"{directory}: in use by {holder}; wait for it to finish or stop it, "
                             "then run again") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.flush()
        held = True
        yield
    finally:
        if held and created and [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            # a stage that stopped before writing anything leaves no directory behind; the file goes
            # while still locked, so no other process can take a lock on it in between
            (directory / LOCK_NAME).unlink(missing_ok=True)
            try:
                directory.rmdir()
            except OSError:
                pass        # another process has just started writing there
        f.close()   # closing the file releases the lock
