#!/usr/bin/env bash
# The wheelhouse bench/gpu.py needs on a GPU machine without network (which has torch, transformers,
# peft, accelerate and safetensors): trl, datasets and their pure-Python dependencies, gguf, and
# adeptlm itself, as wheels in bench/out/wheelhouse. Install there with
#   pip install --no-index --find-links bench/out/wheelhouse trl datasets adeptlm
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/wheelhouse
rm -rf "$out" && mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
"$py" -m pip wheel --quiet --no-deps --no-build-isolation -w "$out" .
# the pure-Python packages at the versions installed here, so the bench runs what the tests ran
# (datasets' compiled dependencies, pyarrow and xxhash, must already be on the machine)
for pkg in trl datasets gguf dill multiprocess fsspec; do
  v=$("$py" -c "import importlib.metadata as m; print(m.version('$pkg'))")
  "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$out" "$pkg==$v"
done
du -sh "$out"
ls "$out"
