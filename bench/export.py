"""GGUF export: `adept export gguf` against llama.cpp's own convert_hf_to_gguf.py, side by side.

The converter comes from the llama-cpp-python source distribution (downloaded from PyPI into
bench/out/ when --convert is not given) and runs with that distribution's own gguf-py; it is used
here only, never copied. Both write the embedded SmolLM2-135M-Instruct (its materialised HF
directory) as f16 and q8_0. Reported: wall time and peak RSS (the child's own VmHWM) as medians of
--repeats runs, alternating tools; then, file against file: tensor names, types, shapes and data
bytes, and every tokenizer.* metadata field.

    python bench/export.py [--repeats 3] [--convert PATH/convert_hf_to_gguf.py]
    python bench/export.py --families     # every family of the export matrix, file against file

The converter needs sentencepiece (pip install sentencepiece) even for tokenizers without a
tokenizer.model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "export"
SDIST = "llama-cpp-python==0.3.36"


def find_converter(given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(OUT.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if found:
        return found[-1]
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:", "-d",
                    str(OUT), "-q"], check=True)
    with tarfile.open(next(OUT.glob("llama_cpp_python-*.tar.gz"))) as tf:
        tf.extractall(OUT, filter="data")
    return sorted(OUT.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))[-1]


CHILD = """
import atexit, runpy, sys
def report():
    hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))
    sys.stderr.write('\\nVMHWM ' + hwm + '\\n')
atexit.register(report)
kind, rest = sys.argv[1], sys.argv[2:]
if kind == 'adept':
    sys.argv = ['adept', *rest]
    runpy.run_module('adeptlm', run_name='__main__')
else:
    sys.argv = rest
    sys.path[:0] = [str(__import__('pathlib').Path(rest[0]).parent / 'gguf-py'), str(__import__('pathlib').Path(rest[0]).parent)]
    import os
    if os.environ.get('BENCH_PRE'):
        # the converter names a byte-level BPE pre-tokenizer by hashing its output on a fixed text, and a
        # tokenizer trained in a test has no known hash: give it the name adept chose
        import conversion.base
        conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: os.environ['BENCH_PRE']
    runpy.run_path(rest[0], run_name='__main__')
"""


def timed(kind: str, argv: list[str], env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    hwm = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("VMHWM ")][-1]
    return {"seconds": wall, "peak_rss_mb": int(hwm) / 1024}


def compare(ours: Path, theirs: Path) -> list[str]:
    """Differences between two GGUF files: tensors (name, type, shape, bytes) and tokenizer.* fields."""
    import gguf

    a, b = gguf.GGUFReader(str(ours)), gguf.GGUFReader(str(theirs))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    diffs = [f"tensor only in {side}: {n}" for side, n in
             [("adept", n) for n in sorted(set(ta) - set(tb))] + [("converter", n) for n in sorted(set(tb) - set(ta))]]
    same_bytes = 0
    for n in sorted(set(ta) & set(tb)):
        x, y = ta[n], tb[n]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            diffs.append(f"{n}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
        elif x.data.tobytes() != y.data.tobytes():
            diffs.append(f"{n}: same type and shape, different bytes")
        else:
            same_bytes += 1
    for key in sorted(k for k in set(a.fields) | set(b.fields) if k.startswith("tokenizer.")):
        fa, fb = a.fields.get(key), b.fields.get(key)
        va = fa.contents() if fa else None
        vb = fb.contents() if fb else None
        if va != vb:
            diffs.append(f"{key}: {str(va)[:60]} vs {str(vb)[:60]}")
    diffs.append(f"({same_bytes} of {len(set(ta) & set(tb))} shared tensors byte-identical)")
    return diffs


def llama_cpp_outputs(path: Path, tok, texts: list[str], prompts: list[list[int]]) -> tuple[list, list]:
    """Token ids of each text and last-position logits of each prompt, from llama.cpp."""
    from adeptlm.backends import LlamaCppBackend

    backend = LlamaCppBackend(path, tok, n_ctx=256)
    try:
        toks = [backend.llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]
        return toks, [backend.next_logits(ids) for ids in prompts]
    finally:
        backend.close()


def families(convert: Path, outtypes: list[str]) -> None:
    """Each family of the export matrix as the tests build it: adept's file against the converter's."""
    import json

    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from families import TINY_FAMILIES, build_family

    from adeptlm.export.check import TOKENIZER_SAMPLE
    from adeptlm.export.gguf import pre_tokenizer_name, tokenizer_kind

    base = OUT / "families"
    print(f"families: adept export gguf vs {convert}")
    for name in TINY_FAMILIES:
        model, tok = build_family(name)
        d = base / name
        model.save_pretrained(d)
        tok.save_pretrained(d)
        tj = json.loads((d / "tokenizer.json").read_text())
        env = {"BENCH_PRE": pre_tokenizer_name(tj)} if tokenizer_kind(tj) == "gpt2" else {}
        prompts = [ids for ids in (tok(t)["input_ids"] for t in TOKENIZER_SAMPLE) if len(ids) > 1][:6]
        for outtype in outtypes:
            ours, theirs = base / f"{name}-adept-{outtype}.gguf", base / f"{name}-convert-{outtype}.gguf"
            timed("adept", ["export", "gguf", "--model", str(d), "--outtype", outtype, "--output", str(ours)])
            print(f"\n{name} {outtype}" + (f" (converter given pre-tokenizer {env['BENCH_PRE']})" if env else ""))
            try:
                timed("convert", [str(convert), "--outtype", outtype, "--outfile", str(theirs), str(d)], env)
            except SystemExit as e:
                why = [ln for ln in str(e).strip().splitlines() if ln.strip() and not ln.startswith("VMHWM")]
                print("  converter failed: " + why[-1])
                continue
            for line in compare(ours, theirs):
                print("  " + line)
            (ta, la), (tb, lb) = llama_cpp_outputs(ours, tok, TOKENIZER_SAMPLE, prompts), \
                llama_cpp_outputs(theirs, tok, TOKENIZER_SAMPLE, prompts)
            same_tok = sum(a == b for a, b in zip(ta, tb))
            rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(la, lb))
            print(f"  llama.cpp on both files: tokenization {same_tok}/{len(ta)} texts identical; "
                  f"logits max relative difference {rel:.2e} over {len(prompts)} prompts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--convert", default=None, help="path to convert_hf_to_gguf.py")
    ap.add_argument("--outtypes", default="f16,q8_0")
    ap.add_argument("--families", action="store_true",
                    help="compare files for each family of the export matrix (tiny models) instead of timing")
    args = ap.parse_args()
    from adeptlm.models import resolve_model

    convert = find_converter(args.convert)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.families:
        families(convert, args.outtypes.split(","))
        return
    model = resolve_model(None)
    for outtype in args.outtypes.split(","):
        ours, theirs = OUT / f"adept-{outtype}.gguf", OUT / f"convert-{outtype}.gguf"
        runs: dict[str, list[dict]] = {"adept": [], "convert_hf_to_gguf": []}
        for _ in range(args.repeats):
            runs["adept"].append(timed("adept", ["export", "gguf", "--model", str(model), "--outtype", outtype,
                                                 "--output", str(ours)]))
            runs["convert_hf_to_gguf"].append(timed("convert", [str(convert), "--outtype", outtype, "--outfile",
                                                                str(theirs), str(model)]))
        print(f"\n{outtype}: median of {args.repeats}")
        med = {}
        for tool, rs in runs.items():
            med[tool] = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss_mb")}
            print(f"  {tool:20s} {med[tool]['seconds']:6.2f} s  peak RSS {med[tool]['peak_rss_mb']:6.0f} MB   "
                  "(runs: " + ", ".join(f"{r['seconds']:.2f}" for r in rs) + ")")
        print(f"  time ratio converter/adept {med['convert_hf_to_gguf']['seconds'] / med['adept']['seconds']:.2f}x, "
              f"memory ratio {med['convert_hf_to_gguf']['peak_rss_mb'] / med['adept']['peak_rss_mb']:.2f}x")
        for line in compare(ours, theirs):
            print("  " + line)


if __name__ == "__main__":
    main()
