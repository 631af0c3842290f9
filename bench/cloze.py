"""The cloze formulation against lm-evaluation-harness: the same answers, and the time beside a letter pass.

On the exam slices in shared/data (C-Eval val, CMMLU test, MMLU val), 0-shot and 5-shot, the
embedded SmolLM2-135M-Instruct (fp32) scores every question in the cloze formulation twice: with
`adept eval --mode cloze`'s scoring code, and with lm-evaluation-harness on a task of the same shape
(for MMLU its own mmlu_continuation template: `Question: ...\\nAnswer:` and each option after a
space; for C-Eval and CMMLU a task written here in that shape, with adeptlm's cloze header and
`答案：` and no delimiter). Both get the questions from the same CSV files. Reported per setting:
how many questions get the same acc and acc_norm answer from both, the largest difference of an
option's log-likelihood, each tool's seconds (median over --repeats fresh processes, alternating, the
clock started after loading) and adept's letter pass over the same questions.

    pip install lm-eval            # bench only; not a dependency of adeptlm
    python bench/cloze.py [--repeats 3] [--shots 0,5] [--exams ceval,cmmlu,mmlu] [--limit N]
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
DATA = ROOT.parent / "shared" / "data"


# --limit: at most this many scored questions per subject (0 = all), the same for every tool
LIMIT = int(os.environ.get("ADEPT_BENCH_LIMIT", "0"))


def questions(exam_name: str):
    """{subject: (dev rows, scored rows)} of one slice (the first LIMIT rows per subject), and its layout."""
    from adeptlm.data.exams import read_exam

    exam = read_exam(DATA / exam_name)
    split = "test" if exam.layout == "cmmlu" else "val"
    return exam.layout, {s: (v.get("dev", []), v[split][:LIMIT] if LIMIT else v[split])
                         for s, v in exam.subjects.items() if split in v}


def harness_tasks(tmp: Path, exam_name: str, shots: int) -> dict[str, str]:
    """One harness task per subject over JSON lines written from adeptlm's reader: {task: subject}."""
    from adeptlm.data.exams import LETTERS
    from adeptlm.evaluate.prompts import header
    from adeptlm.evaluate.subjects import load_mapping, subject_info

    layout, subjects = questions(exam_name)
    mapping = load_mapping(DATA / exam_name)
    names = {}
    for s, (dev, rows) in subjects.items():
        files = {}
        for split, qs in (("dev", dev), ("eval", rows)):
            f = tmp / f"{exam_name}_{s}_{split}.jsonl"
            f.write_text("".join(json.dumps({"question": q.question, "choices": q.choices,
                                             "answer": LETTERS.index(q.answer)}, ensure_ascii=False) + "\n"
                                 for q in qs), encoding="utf-8")
            files[split] = str(f)
        name = f"adeptcloze_{exam_name}_{s}_{shots}"
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                "test_split": "eval", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
                "output_type": "multiple_choice",
                "description": header(layout, subject_info(layout, s, mapping), options=False),
                "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "num_fewshot": shots,
                "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
        if layout == "mmlu":  # lm-eval's mmlu_continuation template
            task["doc_to_text"] = "Question: {{question.strip()}}\nAnswer:"
        else:
            task.update(doc_to_text="{{question}}\n答案：", target_delimiter="")
        (tmp / f"{name}.yaml").write_text(json.dumps(task, ensure_ascii=False), encoding="utf-8")
        names[name] = s
    return names


def run_harness(backend, exam_name: str, shots: int, batch_size: int) -> tuple[dict, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        names = harness_tasks(Path(tmp), exam_name, shots)
        lm = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=batch_size)
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model=lm, tasks=list(names), num_fewshot=shots, log_samples=True,
                                      task_manager=TaskManager(include_path=tmp), bootstrap_iters=0)
        seconds = time.perf_counter() - t0
    out = {}
    for name, s in names.items():
        out[s] = [[r[0] for r in x["filtered_resps"]] for x in sorted(res["samples"][name], key=lambda x: x["doc_id"])]
    return out, seconds


def run_adept(backend, exam_name: str, shots: int, mode: str) -> tuple[dict, float]:
    from adeptlm.evaluate.exam import cloze_logprobs, score_subject
    from adeptlm.evaluate.prompts import subject_prompts
    from adeptlm.evaluate.subjects import load_mapping, subject_info

    layout, subjects = questions(exam_name)
    mapping = load_mapping(DATA / exam_name)
    out = {}
    t0 = time.perf_counter()
    for s, (dev, rows) in subjects.items():
        prompts = subject_prompts(layout, subject_info(layout, s, mapping), dev[:shots], rows, backend.tokenizer,
                                  with_prompt=False, options=mode != "cloze")
        if mode == "cloze":
            out[s], _ = cloze_logprobs(backend, layout, prompts, rows)
        else:
            out[s], _ = score_subject(backend, layout, prompts, rows, mode)
    return out, time.perf_counter() - t0


def child(tool: str, exam_name: str, shots: int, batch_size: int) -> dict:
    from adeptlm.allocator import keep_freed_memory
    from adeptlm.backends import HFBackend

    if tool != "harness":
        keep_freed_memory()  # as `adept eval` sets itself up
    backend = HFBackend.load(None, batch_size=batch_size)
    if tool == "harness":
        lls, seconds = run_harness(backend, exam_name, shots, batch_size)
    else:
        lls, seconds = run_adept(backend, exam_name, shots, "letter" if tool == "adept-letter" else "cloze")
    return {"tool": tool, "seconds": seconds, "lls": lls}


def picks(lls: list[float], choices: list[str]) -> tuple[int, int]:
    """acc's and acc_norm's choice (numpy's argmax: the first of equals)."""
    acc = max(range(len(lls)), key=lambda k: (lls[k], -k))
    norm = max(range(len(lls)), key=lambda k: (lls[k] / len(choices[k]), -k))
    return acc, norm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--exams", default="ceval,cmmlu,mmlu")
    ap.add_argument("--tools", default="adept,adept-letter,harness")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "cloze.json"))
    ap.add_argument("--limit", type=int, default=0, help="at most this many questions per subject (0 = all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global LIMIT
    LIMIT = args.limit or LIMIT
    os.environ["ADEPT_BENCH_LIMIT"] = str(LIMIT)   # the children score the same questions
    if args.child:
        tool, exam_name = args.child.split(":")
        print("RESULT " + json.dumps(child(tool, exam_name, int(args.shots), args.batch_size)), flush=True)
        return
    import lm_eval

    report = {"lm_eval": lm_eval.__version__, "limit_per_subject": LIMIT, "settings": {}}
    for exam_name in args.exams.split(","):
        layout, subjects = questions(exam_name)
        n = sum(len(rows) for _, rows in subjects.values())
        for shots in map(int, args.shots.split(",")):
            runs = {t: [] for t in args.tools.split(",")}
            for rep in range(args.repeats):
                for tool in runs:
                    proc = subprocess.run([sys.executable, __file__, "--child", f"{tool}:{exam_name}", "--shots",
                                           str(shots), "--batch_size", str(args.batch_size)], capture_output=True,
                                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
                    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                    if proc.returncode != 0 or line is None:
                        sys.exit(f"{tool} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                    runs[tool].append(json.loads(line[7:]))
                    print(f"   {exam_name} {shots}-shot run {rep + 1}: {tool} {runs[tool][-1]['seconds']:.1f} s",
                          flush=True)
            setting = {"questions": n, "seconds": {t: [round(r["seconds"], 2) for r in rs] for t, rs in runs.items()}}
            med = {t: statistics.median(r["seconds"] for r in rs) for t, rs in runs.items()}
            setting["median_seconds"] = {t: round(v, 2) for t, v in med.items()}
            if "adept" in runs and "harness" in runs:
                a, h = runs["adept"][-1]["lls"], runs["harness"][-1]["lls"]
                same_acc = same_norm = 0
                worst = 0.0
                for s, (_, rows) in subjects.items():
                    for q, la, lh in zip(rows, a[s], h[s]):
                        pa, ph = picks(la, q.choices), picks(lh, q.choices)
                        same_acc += pa[0] == ph[0]
                        same_norm += pa[1] == ph[1]
                        worst = max(worst, *(abs(x - y) for x, y in zip(la, lh)))
                setting.update(same_acc=same_acc, same_acc_norm=same_norm, max_abs_loglikelihood_diff=worst,
                               adept_speedup_vs_harness=round(med["harness"] / med["adept"], 2))
            if "adept" in runs and "adept-letter" in runs:
                setting["cloze_over_letter_time"] = round(med["adept"] / med["adept-letter"], 2)
            report["settings"][f"{exam_name} {shots}-shot"] = setting
            print(json.dumps({f"{exam_name} {shots}-shot": setting}, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
