"""How cost grows: `adept sft` tokens/s against sequence length and model size, exam time against the
number of questions and of demonstrations (issue 22, item 5).

SFT: both known models (the embedded SmolLM2-135M-Instruct and gemma3-270m), LoRA r=64 alpha=128 on
the 7 projections, fp32, adept's defaults otherwise. For each sequence length L (default 128 to
2048) every record is exactly L tokens: alpaca_zh_demo.json's instructions with the outputs of the
following records joined into one long reply, truncated at L. Each step sees about 2048 tokens
(batch = 2048 // L, at least 1), so the work per step is the same and what changes with L is the
attention's share; --steps optimiser steps per run (tokens/s = trained tokens / train runtime, first
step included), one fresh process per run.

Exams: C-Eval's slice in shared/data (val, 4 subjects, up to 80 questions) in letter mode, on the
transformers backend (the embedded model, fp32, batch 8) and on llama.cpp (a q8_0 export of it),
each loaded once: scoring time for 20/40/80 questions (--limit 5/10/all per subject) at 0 shots, and
for 80 questions at 0, 1, 2 and 5 shots.

Each call adds its runs to bench/out/scaling.json (--fresh starts it over); the table printed and
the plot bench/scaling.svg show the median of the stored runs of each point.

    python bench/scaling.py [--lengths 128,256,512,1024,2048] [--models smollm2-135m-instruct,gemma3-270m]
                            [--steps 4] [--skip_sft] [--skip_exam] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import CEVAL, ensure_gguf, run_adept  # noqa: E402  (bench/eval.py)
from train import ROOT, TARGETS, run_child  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_zh_demo.json"
TOKENS_PER_STEP = 2048


def long_records(tokenizer, length: int, count: int) -> list[dict]:
    """`count` records whose rendered length reaches `length` tokens (the reply is cut there)."""
    every = json.loads(DATA.read_text(encoding="utf-8"))
    out, k = [], 0
    while len(out) < count:
        rec, reply = every[k % len(every)], []
        k += 1
        while len(tokenizer("\n".join(reply))["input_ids"]) < length + 16:
            reply.append(every[k % len(every)]["output"])
            k += 1
        out.append({"instruction": rec["instruction"], "input": "", "output": "\n".join(reply)})
    return out


def sft_child(model: str, length: int, steps: int) -> dict:
    from adeptlm.cli import main
    from adeptlm.models import load_tokenizer
    from adeptlm.runrecord import read_run

    batch = max(1, TOKENS_PER_STEP // length)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.json"
        recs = long_records(load_tokenizer(model), length, batch * steps)
        data.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
        rc = main(["sft", "--model_name_or_path", model, "--dataset_dir", str(data), "--output_dir",
                   str(Path(tmp) / "out"), "--max_seq_length", str(length), "--per_device_train_batch_size",
                   str(batch), "--max_steps", str(steps), "--learning_rate", "1e-4", "--lora_rank", "64",
                   "--lora_alpha", "128", "--trainable", ",".join(TARGETS), "--logging_steps", "1",
                   "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir", "True"])
        assert rc == 0
        m = read_run(Path(tmp) / "out")["metrics"]
    return {"model": model, "length": length, "batch": batch, "steps": steps, "tokens": m["trained_tokens_seen"],
            "runtime_s": m["train_runtime_s"], "tokens_per_s": m["trained_tokens_seen"] / m["train_runtime_s"]}


def exam_child(backend_name: str) -> dict:
    """Scoring times on one loaded backend, for several question counts and shot counts."""
    from adeptlm.allocator import keep_freed_memory
    from adeptlm.backends import HFBackend, LlamaCppBackend
    from adeptlm.data.exams import read_exam

    keep_freed_memory()
    backend = LlamaCppBackend.load(ensure_gguf()) if backend_name == "llama.cpp" else HFBackend.load(None, batch_size=8)
    subjects = list(read_exam(CEVAL).subjects)

    def timed(limit: int | None, shots: int) -> dict:
        preds, seconds, _ = run_adept(backend, subjects, shots, "letter", limit)
        return {"questions": sum(map(len, preds.values())), "shots": shots, "seconds": seconds}

    timed(2, 0)  # warm-up: first-call allocations and thread start-up are not the exam's cost
    rows = [timed(limit, 0) for limit in (5, 10, None)] + [timed(None, shots) for shots in (1, 2, 5)]
    if backend_name == "llama.cpp":
        backend.close()
    return {"backend": backend_name, "rows": rows}


def medians(report: dict) -> dict:
    """Each SFT point (model, length) and exam point (backend, questions, shots) as the median of its runs."""
    sft: dict = {}
    for r in report["sft"]:
        sft.setdefault((r["model"], r["length"]), []).append(r["tokens_per_s"])
    exam: dict = {}
    for ex in report["exam"]:
        for r in ex["rows"]:
            exam.setdefault((ex["backend"], r["questions"], r["shots"]), []).append(r["seconds"])
    return {"sft": [{"model": m, "length": n, "tokens_per_s": statistics.median(v), "runs": v}
                    for (m, n), v in sft.items()],
            "exam": [{"backend": b, "questions": q, "shots": k, "seconds": statistics.median(v), "runs": v}
                     for (b, q, k), v in exam.items()]}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for model in dict.fromkeys(r["model"] for r in summary["sft"]):
        rows = sorted((r for r in summary["sft"] if r["model"] == model), key=lambda r: r["length"])
        ax.plot([r["length"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens; batch x length = 2048)")
    ax.set_ylabel("trained tokens/s")
    ax.set_title("adept sft, LoRA r64, fp32, 2 cores")
    ax.legend()
    for ax, key, label in ((axes[1], "questions", "questions (0-shot)"), (axes[2], "shots", "demonstrations (80 questions)")):
        for backend in dict.fromkeys(r["backend"] for r in summary["exam"]):
            rows = [r for r in summary["exam"] if r["backend"] == backend
                    and (r["shots"] == 0 if key == "questions" else r["questions"] == 80)]
            rows.sort(key=lambda r: r[key])
            ax.plot([r[key] for r in rows], [r["seconds"] for r in rows], marker="o", label=backend)
        ax.set_xlabel(label)
        ax.set_ylabel("scoring time (s)")
        ax.set_title("C-Eval slice, letter mode, embedded model")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="128,256,512,1024,2048")
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip_sft", action="store_true")
    ap.add_argument("--skip_exam", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="forget the runs stored in --out")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "scaling.json"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "scaling.svg"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        result = sft_child(rest[0], int(rest[1]), args.steps) if kind == "sft" else exam_child(rest[0])
        print("RESULT " + json.dumps(result), flush=True)
        return
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() and not args.fresh else {"sft": [], "exam": []}
    if not args.skip_sft:
        report["sft"] += [run_child(__file__, ["--steps", str(args.steps), "--child", "sft", model, length])
                         for model in args.models.split(",") for length in args.lengths.split(",")]
    if not args.skip_exam:
        ensure_gguf()
        report["exam"] += [run_child(__file__, ["--child", "exam", b]) for b in ("transformers", "llama.cpp")]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary = medians(report)
    for r in summary["sft"]:
        print(f"sft  {r['model']:24s} length {r['length']:5d}: {r['tokens_per_s']:6.1f} tokens/s (runs: "
              + ", ".join(f"{x:.1f}" for x in r["runs"]) + ")")
    for r in summary["exam"]:
        print(f"exam {r['backend']:12s} {r['questions']:3d} questions {r['shots']} shots: {r['seconds']:5.1f} s (runs: "
              + ", ".join(f"{x:.1f}" for x in r["runs"]) + ")")
    plot(summary, Path(args.plot))
    print(f"wrote {out} and {args.plot}")


if __name__ == "__main__":
    main()
