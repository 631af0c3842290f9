"""SHA-256 of a file read in 1 MiB blocks: data fingerprints (data/tokenize.py) and the materialised
models' record of the GGUF they came from (models.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
