"""Exam speed and agreement: `adept eval` against lm-evaluation-harness on the same questions and prompts.

Both run in this one process on the same loaded model (the embedded SmolLM2-135M-Instruct, fp32),
over the C-Eval slices in shared/data (val split, 4 subjects, 80 questions), 0-shot and 5-shot. The
harness gets one local task per subject, written here as YAML over the same CSV files, with the
prompt built exactly as adeptlm builds it (the seed's C-Eval header as the description, the first
dev rows as demonstrations, `question\\nA. ..\\nD. ..\\n答案：` and the letters as choices with no
delimiter), scored as multiple_choice (log-likelihood of each letter). adeptlm scores in letter mode.

Reported per setting: questions per second of each (median of --repeats timed runs), the speed
ratio, each one's accuracy, and the share of questions where both pick the same letter.

    pip install lm-eval            # bench only; not a dependency of adeptlm
    python bench/eval.py [--repeats 3] [--batch_size 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def run_adept(backend, subjects, shots):
    from adeptlm.data.exams import read_exam
    from adeptlm.evaluate.exam import score_subject
    from adeptlm.evaluate.prompts import subject_prompts
    from adeptlm.evaluate.subjects import subject_info

    exam = read_exam(CEVAL)
    t0 = time.perf_counter()
    preds, first_prompt = {}, None
    for s in subjects:
        qs = exam.subjects[s]["val"]
        prompts = subject_prompts("ceval", subject_info("ceval", s), exam.subjects[s]["dev"][:shots], qs,
                                  backend.tokenizer, with_prompt=False)
        first_prompt = first_prompt or prompts[0].text
        preds[s], _ = score_subject(backend, "ceval", prompts, qs, "letter")
    return preds, time.perf_counter() - t0, first_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "eval.json"))
    args = ap.parse_args()

    from adeptlm.backends import HFBackend
    from adeptlm.data.exams import read_exam

    exam = read_exam(CEVAL)
    subjects = list(exam.subjects)
    gold = {s: [q.answer for q in exam.subjects[s]["val"]] for s in subjects}
    n = sum(len(v) for v in gold.values())
    backend = HFBackend.load(None, batch_size=args.batch_size)
    report = {"questions": n, "subjects": subjects, "batch_size": args.batch_size, "settings": {}}
    for shots in (0, 5):
        times = {"adept": [], "harness": []}
        for rep in range(args.repeats):  # alternate so both share the machine's noise
            a_preds, a_s, a_prompt = run_adept(backend, subjects, shots)
            h_preds, h_s, h_prompt = run_harness(backend.model, backend.tokenizer, subjects, shots, args.batch_size)
            times["adept"].append(a_s)
            times["harness"].append(h_s)
        same = sum(a == h for s in subjects for a, h in zip(a_preds[s], h_preds[s]))
        acc = lambda p: 100 * sum(x == g for s in subjects for x, g in zip(p[s], gold[s])) / n  # noqa: E731
        a_qps, h_qps = n / statistics.median(times["adept"]), n / statistics.median(times["harness"])
        report["settings"][f"{shots}-shot"] = {
            "adept_qps": a_qps, "harness_qps": h_qps, "speedup": a_qps / h_qps,
            "same_prediction_share": same / n, "adept_accuracy": acc(a_preds), "harness_accuracy": acc(h_preds),
            "adept_seconds": times["adept"], "harness_seconds": times["harness"],
            "identical_prompt_text": a_prompt == h_prompt}
        print(json.dumps({f"{shots}-shot": report["settings"][f"{shots}-shot"]}, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
