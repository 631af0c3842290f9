"""`adept export gguf --converter PATH`: the file written by llama.cpp's own convert_hf_to_gguf.py, for
architectures adept's exporter does not handle. adept only runs the script (in a child process, with
the gguf-py beside it) and writes through the same atomic output and quantizer path as its own
exporter, so a failed or killed conversion leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import AdeptError
from ..models import resolve_model
from .gguf import ExportResult


def converter_writer(script: Path):
    """A writer that runs llama.cpp's own convert_hf_to_gguf.py (from a llama.cpp checkout or the copy in
    llama-cpp-python's source distribution: vendor/llama.cpp/). It uses the gguf-py beside it."""
    if script.name != "convert_hf_to_gguf.py" or not script.is_file():
        raise AdeptError(f"--converter {script}: not a convert_hf_to_gguf.py file (it lies at the top of a "
                         "llama.cpp checkout, or in llama-cpp-python's sdist under vendor/llama.cpp/)")

    def write(model: str, path: Path, outtype: str, pretokenizer: str | None, progress: bool,
              label: str = "") -> ExportResult:
        import gguf

        if pretokenizer:
            raise AdeptError("--pretokenizer is adept's own exporter's option; llama.cpp's converter names "
                             "the pre-tokenizer itself")
        model_dir = resolve_model(model)
        cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(path), "--outtype", outtype]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            raise AdeptError(f"{script}: failed on {model_dir} (exit {proc.returncode}): "
                             f"{lines[-1] if lines else 'no output'}")
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("tokenizer.ggml.pre")
        arch = reader.fields["general.architecture"].contents()
        result = ExportResult(path, outtype, arch, len(reader.tensors), field.contents() if field else "",
                              path.stat().st_size)
        del reader
        return result

    return write
