"""run.json: each stage's provenance (config, versions, data fingerprint) and metrics.

Written last into a stage's output directory, so its presence means the stage finished; later
stages and `adept run` read it.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import write_text

RUN_JSON = "run.json"
PACKAGES = ("adeptlm", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "gguf",
            "llama_cpp_python")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            pass
    return out


def write_run(out_dir: Path | str, stage: str, config: dict, metrics: dict, **extra: Any) -> Path:
    """Write run.json atomically (temporary file, then rename)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
              "config": config, "metrics": metrics, **extra}
    return write_text(out_dir / RUN_JSON, json.dumps(record, indent=2, ensure_ascii=False, default=str))


def read_run(out_dir: Path | str) -> dict | None:
    path = Path(out_dir) / RUN_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
