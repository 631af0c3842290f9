"""`adept export gguf --converter PATH`: the file written by llama.cpp's own convert_hf_to_gguf.py, for
architectures adept's exporter does not handle. adept only runs the script (in a child process; the
script puts the gguf-py beside it on its own path); export_gguf wraps it in the same atomic output and
quantizer path as adept's exporter, so a failed or killed conversion leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import AdeptError

# What the converter writes itself; other types are quantized from its f16 file by llama.cpp.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


def check_script(script: Path) -> Path:
    if script.name != "convert_hf_to_gguf.py" or not script.is_file():
        raise AdeptError(f"--converter {script}: not a convert_hf_to_gguf.py file (it lies at the top of a "
                         "llama.cpp checkout, or in llama-cpp-python's sdist under vendor/llama.cpp/)")
    return script


def run_converter(script: Path, model_dir: Path, path: Path, outtype: str) -> None:
    """Run the converter on MODEL_DIR, writing PATH; its last output line is the error if it fails."""
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(path), "--outtype", outtype]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        raise AdeptError(f"{script}: failed on {model_dir} (exit {proc.returncode}): "
                         f"{lines[-1] if lines else 'no output'}")
