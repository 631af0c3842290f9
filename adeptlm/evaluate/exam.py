"""`adept eval ceval|cmmlu|mmlu|exam`: multiple-choice exams, scored one way for every artifact.

Modes (recorded with every score), the first two being OLMES's two formulations:
- letter:   the options listed, then the next-token logits of the answer letters (MCF); the letter's
            token is the one a demonstration uses (`答案：A` -> "A", `Answer: A` -> " A"), with the
            other spelling as a fallback where a tokenizer has no single token for it
- cloze:    the question without its options, then each option's text scored as its continuation
            (CF): `score` is acc_norm (largest log-likelihood per character), `acc` the largest sum
- both:     letter and cloze on one loaded model, in output_dir/letter and output_dir/cloze, and the
            better one named by OLMES's rule (best_formulation in summary.json)
- generate: greedy answer, then the seed's extraction patterns, then option-text match; an answer
            that cannot be read counts as wrong (the seed guessed at random)

Outputs under --output_dir: take{i}/summary.json in the seed's layout (per subject score/num/correct,
`grouped` per category, `All`; every score in percent, micro = per question, macro = mean of
subjects), take{i}/submission.json for splits without answers, take{i}/<subject>_<split>.csv with
--do_save_csv, summary.json over all takes (mean and standard deviation), and run.json with the
protocol. Finished subjects are kept in take{i}/subjects/ so an interrupted run resumes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_output, write_text
from ..errors import AdeptError, InputError
from ..data import layouts
from ..data.exams import LETTERS, Exam, Question, exam_files, read_exam
from ..runrecord import write_run
from .prompts import Prompt, answer_delimiter, subject_prompts
from .protocol import FORMULATIONS, MODES, SAME_EVALUATION_KEYS, ExamConfig
from .subjects import load_mapping, subject_info


# The seed's (Chinese-LLaMA-Alpaca-2) answer extraction patterns, in order; {L} is the letter class,
# [ABCD] for four options as the seed has it, [A-E] for five, and so on.
EXTRACT_PATTERNS = [r"所以答案是(.+?)。", r"({L})是正确的", r"选项({L})正确", r"答案为({L})",
                    r"答案是({L})", r"答案({L})", r"选择({L})", r"答案：({L})", r"选择答案({L})",
                    r"[Aa]nswer(?: is)?:?\s*\(?({L})\b"]


@dataclass
class SubjectResult:
    subject: str
    category: str
    split: str
    num: int
    correct: int | None  # None when the split has no answers
    preds: list[str | None]
    extra: dict = field(default_factory=dict)  # correct_acc (cloze), unparsed (generate)


def pick_split(exam: Exam, cfg: ExamConfig) -> str:
    if cfg.split:
        if cfg.split not in exam.splits():
            raise AdeptError(f"{cfg.data_dir}: no '{cfg.split}' split (found {', '.join(exam.splits())})")
        return cfg.split
    order = ["test"] if cfg.do_test else list(layouts.get(exam.layout).eval_splits)
    for split in order:
        if split in exam.splits():
            return split
    raise AdeptError(f"{cfg.data_dir}: no {' or '.join(order)} split to evaluate (found {', '.join(exam.splits())})")


def letter_candidates(tokenizer, layout: str, n_options: int = 4) -> list[list[int]]:
    """For each of the first n_options letters, the single-token spellings that can follow the answer cue."""
    delim = answer_delimiter(layout)
    out = []
    for letter in layouts.letters(n_options):
        ids = []
        for text in (delim + letter, letter, " " + letter):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        if not ids:
            raise AdeptError(f"the tokenizer has no single token for the answer letter {letter!r}: use --mode cloze")
        out.append(ids)
    return out


def extract_answer(text: str, choices: Sequence[str], layout: str = "ceval") -> str | None:
    """The answer letter a generated response names, or None.

    The seed's order: its patterns, then the first option letter (A-D for four options) anywhere,
    then the option text the response names first. The bare-character step suits Chinese answers;
    in English text it fires on capitals inside words ("Daren", "Bello"), so for an English layout
    a letter counts only as a label: at the start of a line ("B", "B.", "(B)") or after
    "option"/"choice".
    """
    allowed = "".join(layouts.letters(len(choices)))
    cls = f"[{allowed}]"
    for pat in EXTRACT_PATTERNS:
        m = re.search(pat.replace("{L}", cls), text)
        if m:
            found = [c for c in m.group(1) if c in allowed]
            if found:
                return found[0]
    if layouts.get(layout).english:
        m = (re.search(rf"(?m)^\s*\(?({cls})(?:[.):]|\s*$)", text)
             or re.search(rf"(?i:option|choice)\s+\(?({cls})\b", text))
    else:
        m = re.search(f"({cls})", text)
    if m:
        return m.group(1)
    named = sorted({c for c in choices if c}, key=len, reverse=True)  # longest first: "100" before "10"
    if not named:
        return None
    m = re.search("|".join(re.escape(c) for c in named), text)
    return LETTERS[list(choices).index(m.group(0))] if m else None


def score_subject(backend, layout: str, prompts: Sequence[Prompt], questions: Sequence[Question], mode: str,
                  max_new_tokens: int = 32, stop_ids: Sequence[int] = (),
                  generated: Sequence[list[int]] | None = None) -> tuple[list[str | None], dict]:
    """Predicted letters for one subject's prompts, and mode-specific extras. In generate mode,
    `generated` gives the answers' tokens where they were generated already (with other subjects')."""
    from ..backends import ScoreRequest

    tok = backend.tokenizer
    if mode == "letter":
        cands = letter_candidates(tok, layout, max(len(q.choices) for q in questions))
        flat = sorted({i for ids in cands for i in ids})
        rows = backend.next_token_scores([ScoreRequest(p.ids, p.prefix_len) for p in prompts], flat)
        scores = [[max(row[flat.index(i)] for i in ids) for ids in cands[:len(q.choices)]]
                  for row, q in zip(rows, questions)]
        return [LETTERS[max(range(len(s)), key=lambda k: s[k])] for s in scores], {}
    if mode == "cloze":
        lls, pairs = cloze_logprobs(backend, layout, prompts, questions)
        return cloze_picks(lls, [q.choices for q in questions])
    outs = generated if generated is not None else backend.generate([p.ids for p in prompts], max_new_tokens, stop_ids)
    texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
    preds = [extract_answer(t, q.choices, layout) for t, q in zip(texts, questions)]
    return preds, {"responses": texts, "unparsed": sum(p is None for p in preds)}


def continuation_ids(tokenizer, prompt: Prompt, continuation: str) -> list[int]:
    """The continuation's tokens after the prompt, split as lm-evaluation-harness splits a request:
    the prompt's last text and the continuation encoded as one string, and the continuation is what
    follows the tokens of that text alone (a tokenizer may merge across the boundary)."""
    head = tokenizer(prompt.tail, add_special_tokens=prompt.tail_special)["input_ids"]
    whole = tokenizer(prompt.tail + continuation, add_special_tokens=prompt.tail_special)["input_ids"]
    return whole[len(head):]


def cloze_logprobs(backend, layout: str, prompts: Sequence[Prompt], questions: Sequence[Question]):
    """Sum of log-probabilities of each option's text (after the cloze delimiter) following its
    question's prompt: one list per question. Every option of a question shares that question's
    prompt, which the backend runs once (continuation_logprobs groups the requests by context)."""
    from .prompts import cloze_delimiter

    pairs, owner = [], []
    for i, (p, q) in enumerate(zip(prompts, questions)):
        for c in q.choices:
            pairs.append((p.ids, continuation_ids(backend.tokenizer, p, cloze_delimiter(layout) + c)))
            owner.append(i)
    flat = backend.continuation_logprobs(pairs)
    out: list[list[float]] = [[] for _ in prompts]
    for i, x in zip(owner, flat):
        out[i].append(x)
    return out, pairs


def cloze_picks(lls: Sequence[Sequence[float]], choices: Sequence[Sequence[str]]) -> tuple[list[str], dict]:
    """The cloze formulation's answers: acc_norm's pick (largest log-likelihood per character of the
    option's text, lm-evaluation-harness's acc_norm and OLMES's "character" normalisation) is the
    headline; acc's pick (largest sum) is kept beside it. Ties go to the earlier option, as argmax."""
    norm, acc = [], []
    for ll, cs in zip(lls, choices):
        per_char = [x / max(1, len(c)) for x, c in zip(ll, cs)]
        norm.append(LETTERS[max(range(len(ll)), key=lambda k: (per_char[k], -k))])
        acc.append(LETTERS[max(range(len(ll)), key=lambda k: (ll[k], -k))])
    return norm, {"preds_acc": acc, "loglikelihoods": [[round(x, 6) for x in ll] for ll in lls]}


def choose_demos(exam: Exam, subject: str, cfg: ExamConfig, take: int) -> list[Question]:
    if not cfg.few_shot or cfg.ntrain == 0:
        return []
    dev = exam.subjects[subject].get("dev", [])
    if not dev:
        raise AdeptError(f"{cfg.data_dir}: subject '{subject}' has no dev split for few-shot demonstrations: "
                         "pass --few_shot False")
    k = len(dev) if cfg.ntrain < 0 else min(cfg.ntrain, len(dev))
    if cfg.shot_seed is None:
        return dev[:k]
    return random.Random(cfg.shot_seed + take).sample(dev, k)


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def load_backend(cfg: ExamConfig):
    """The exam's backend, through the one resolver (backends.load_backend)."""
    from ..backends import load_backend as resolve

    return resolve(cfg.model, cfg.backend, batch_size=cfg.batch_size, dtype=cfg.dtype, tokenizer=cfg.tokenizer,
                   mode=cfg.mode)


def run_exam(cfg: ExamConfig, backend=None) -> dict:
    """Evaluate, write the outputs, return the summary over all takes. A backend passed in is used
    and left open; one loaded here is closed at the end."""
    exam = read_exam(cfg.data_dir)
    if cfg.expect_layout and exam.layout != cfg.expect_layout:
        raise AdeptError(f"{cfg.data_dir}: this exam is in the {exam.layout} layout, not {cfg.expect_layout}: "
                         f"use `adept eval {exam.layout}` or `adept eval exam`")
    if cfg.mode not in MODES:
        raise AdeptError(f"unknown --mode {cfg.mode}: expected one of {', '.join(MODES)}")
    if cfg.mode == "both":
        return run_both(cfg, backend)
    if cfg.circular and cfg.mode == "cloze":
        raise AdeptError("--circular rotates the listed options: use it with --mode letter or generate (cloze lists none)")
    split = pick_split(exam, cfg)
    mapping = load_mapping(cfg.data_dir)
    subjects = [s for s in exam.subjects if split in exam.subjects[s]]
    if cfg.subjects:
        unknown = [s for s in cfg.subjects if s not in exam.subjects]
        if unknown:
            raise AdeptError(f"{cfg.data_dir}: no subject {', '.join(unknown)} (found {', '.join(exam.subjects)})")
        subjects = [s for s in subjects if s in cfg.subjects]
    from ..backends import stop_ids as stops_of
    from ..templates import get_template

    style = exam.layout if cfg.prompt_style == "auto" else cfg.prompt_style
    if style not in layouts.NAMES:
        raise AdeptError(f"unknown --prompt_style {cfg.prompt_style}: expected auto, {', '.join(layouts.NAMES)}")
    excluded = read_exclusions(cfg.exclude)
    if excluded:
        left = sum(1 for s in subjects for q in exam.subjects[s][split] if (s, split, q.id) in excluded)
        print(f"adept: {left} item(s) of {cfg.exclude} left out of the score", flush=True)
        subjects = [s for s in subjects if scored_questions(exam, s, split, cfg, excluded)]  # none left: not scored
    own_backend = backend is None
    backend = backend or load_backend(cfg)
    tok = backend.tokenizer
    template = get_template(tok, cfg.template) if cfg.with_prompt else None
    stop_ids = stops_of(tok, template)
    rank, world = _rank_world()
    mine = subjects[rank::world]
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    _check_same_evaluation(cfg, split)
    t0 = time.time()
    n_questions = 0
    for take in range(max(1, cfg.n_times)):
        take_dir = cfg.output_dir / f"take{take}"
        (take_dir / "subjects").mkdir(parents=True, exist_ok=True)
        asking = {}
        for subject in mine:
            if (take_dir / "subjects" / f"{subject}.json").is_file():
                continue  # finished in an earlier, interrupted run
            questions = scored_questions(exam, subject, split, cfg, excluded)
            info = subject_info(exam.layout, subject, mapping)
            # CircularEval: each question asked once per rotation of its options (a file's questions
            # all have as many options as its columns)
            rotations = len(questions[0].choices) if questions else 0
            asked = [rotate(q, r) for r in range(rotations) for q in questions] if cfg.circular else questions
            prompts = subject_prompts(style, info, choose_demos(exam, subject, cfg, take), asked, tok,
                                      cfg.with_prompt, template, options=cfg.mode != "cloze")
            asking[subject] = (questions, info, rotations, asked, prompts)
        generated = {}
        if cfg.mode == "generate" and asking:
            # every subject's prompts in one call: a subject of a dozen questions would otherwise decode
            # in a batch of its own, each step costing nearly what a full batch costs (score_subject
            # generates only for callers that ask it of one subject directly)
            flat = backend.generate([p.ids for *_, ps in asking.values() for p in ps], cfg.max_new_tokens,
                                    stop_ids)
            for subject, (*_, prompts) in asking.items():
                generated[subject], flat = flat[:len(prompts)], flat[len(prompts):]
        for subject, (questions, info, rotations, asked, prompts) in asking.items():
            done = take_dir / "subjects" / f"{subject}.json"
            has_gold = all(q.answer for q in questions)
            preds, extra = score_subject(backend, style, prompts, asked, cfg.mode, cfg.max_new_tokens, stop_ids,
                                         generated.get(subject))
            marks = [p == q.answer for p, q in zip(preds, asked)]
            if cfg.circular:
                n = len(questions)
                preds = preds[:n]  # the answers to the options in their own order
                extra = {k: v[:n] if isinstance(v, list) and len(v) == rotations * n else v for k, v in extra.items()}
                extra["correct_unrotated"] = sum(marks[:n]) if has_gold else None
                marks = [all(marks[i + r * n] for r in range(rotations)) for i in range(n)]
            correct = sum(marks) if has_gold else None
            if has_gold and "preds_acc" in extra:
                extra["correct_acc"] = sum(p == q.answer for p, q in zip(extra["preds_acc"], questions))
            result = SubjectResult(subject, info.category, split, len(questions), correct, preds,
                                   {k: v for k, v in extra.items() if k != "responses"})
            n_questions += len(questions)
            if cfg.do_save_csv:
                _write_csv(take_dir / f"{subject}_{split}.csv", questions, preds, extra.get("responses"),
                           marks if has_gold else None)
            _atomic_json(done, asdict(result))
            score = f"{100 * correct / len(questions):.1f}%" if correct is not None else "no answers"
            print(f"adept: take {take} {subject} [{split}] {len(questions)} questions: {score}", flush=True)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()
        if rank != 0:
            return {}
    result = _finish(cfg, exam, split, subjects, template, backend, time.time() - t0, n_questions, excluded)
    if own_backend and hasattr(backend, "close"):
        backend.close()      # free llama.cpp's context now, not in a destructor at interpreter exit
    return result


def run_both(cfg: ExamConfig, backend=None) -> dict:
    """Both formulations on one loaded model, each a whole evaluation in output_dir/letter and
    output_dir/cloze, and output_dir/summary.json with each one's score and interval and the better
    one named (best_formulation). Its top level is the better one's summary, so a reader that knows
    one formulation reads that."""
    from dataclasses import replace

    own = backend is None
    backend = backend or load_backend(replace(cfg, mode="letter"))
    try:
        parts = {f: run_exam(replace(cfg, mode=f, circular=cfg.circular and f == "letter",
                                     output_dir=cfg.output_dir / f), backend) for f in FORMULATIONS}
    finally:
        if own and hasattr(backend, "close"):
            backend.close()
    forms = {f: formulation_entry(s) for f, s in parts.items()}
    best = best_formulation({f: e["score"] for f, e in forms.items()})
    overall = {**parts[best], "formulations": forms, "best_formulation": best}
    _atomic_json(cfg.output_dir / "summary.json", overall)
    write_run(cfg.output_dir, "eval", {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              {"formulations": forms, "best_formulation": best},
              protocol={**_protocol_of(cfg.output_dir / FORMULATIONS[0]), "mode": "both",
                        "formulations": list(FORMULATIONS),
                        "best_rule": "OLMES: the formulation with the higher score (letter on a tie)"})
    return overall


def _protocol_of(out: Path) -> dict:
    f = out / "run.json"
    return json.loads(f.read_text(encoding="utf-8")).get("protocol", {}) if f.is_file() else {}


def formulation_entry(summary: dict) -> dict:
    """One formulation's headline: score (percent), the questions, and the 95% Wilson interval; for
    cloze, acc (sum of log-likelihoods) beside acc_norm (per character, the score)."""
    from .compare import wilson

    a = summary.get("All") or {}
    out = {"score": a.get("score"), "correct": a.get("correct"), "num": a.get("num")}
    if a.get("correct") is not None and a.get("num"):
        out["interval"] = [round(x, 2) for x in wilson(a["correct"], a["num"])]
    if "acc" in a:
        out.update(acc=a["acc"], acc_norm=a["score"])
    return out


def model_formulation(summaries: Sequence[dict]) -> str | None:
    """The formulation a model is read in across a run's exams: OLMES's rule on its answers pooled
    over every exam scored in both (None if none was). Pooled, because a subject the base model
    cannot know leaves both of its formulations at chance, and picking between two chance scores is
    picking noise; the exams it can answer say which form it shows knowledge in."""
    forms = [s["formulations"] for s in summaries if s and s.get("formulations")]
    if not forms:
        return None
    pooled = {}
    for f in FORMULATIONS:
        num = sum(x[f].get("num") or 0 for x in forms)
        correct = sum(x[f].get("correct") or 0 for x in forms)
        pooled[f] = 100 * correct / num if num else None
    return best_formulation(pooled)


def best_formulation(scores: dict[str, float | None]) -> str:
    """OLMES's rule: score a model in both formulations and read it in the better one. A tie (or no
    score) keeps the letter formulation, the seed's protocol."""
    letter, cloze = scores.get("letter"), scores.get("cloze")
    if cloze is not None and (letter is None or cloze > letter):
        return "cloze"
    return "letter"


def read_exclusions(path: Path | None) -> set[tuple[str, str, str]]:
    """(subject, split, id) of the items a --exclude file names (adept data contamination --output's shape)."""
    if path is None:
        return set()
    from ..data.files import load_json

    if not path.is_file():
        raise InputError(path, "no such file (--exclude)")
    data = load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object with 'items' (adept data contamination --output writes one)")
    items = data.get("items")
    if not isinstance(items, list):
        raise InputError(path, "'items' must be a list of {subject, split, id}")
    out = set()
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in ("subject", "split", "id")):
            raise InputError(path, "expected subject, split and id, each a string", field=f"items[{k}]")
        out.add((item["subject"], item["split"], item["id"]))
    return out


def scored_questions(exam, subject: str, split: str, cfg: ExamConfig, excluded: set) -> list:
    """The questions of one subject that count: --exclude's items left out, then the first --limit."""
    qs = [q for q in exam.subjects[subject][split] if (subject, split, q.id) not in excluded]
    return qs[: cfg.limit] if cfg.limit else qs


def _check_same_evaluation(cfg: ExamConfig, split: str) -> None:
    """Finished subjects are reused on a rerun only if they came from the same evaluation."""
    path = cfg.output_dir / "eval-config.json"
    now = {k: str(getattr(cfg, k)) for k in SAME_EVALUATION_KEYS} | {"split": split}
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        # a setting added after that evaluation was written is taken at its default there
        defaults = {f.name: str(f.default) for f in fields(ExamConfig)}
        differ = [k for k in now if before.get(k, defaults.get(k)) != now[k]]
        if differ:
            raise AdeptError(f"{cfg.output_dir} holds results of another evaluation (different {', '.join(differ)}): "
                             "use another --output_dir, or delete it to start afresh")
    elif _rank_world()[0] == 0:
        _atomic_json(path, now)


def _finish(cfg, exam, split, subjects, template, backend, seconds, n_questions, excluded) -> dict:
    takes = []
    for take in range(max(1, cfg.n_times)):
        take_dir = cfg.output_dir / f"take{take}"
        results = [SubjectResult(**json.loads((take_dir / "subjects" / f"{s}.json").read_text())) for s in subjects]
        summary = build_summary(results)
        if summary["All"].get("score") is not None:
            summary["All"]["letters"] = letter_counts(results, [scored_questions(exam, r.subject, split, cfg, excluded)
                                                                for r in results])
        _atomic_json(take_dir / "summary.json", summary)
        if any(r.correct is None for r in results):
            ids = {s: [q.id for q in scored_questions(exam, s, split, cfg, excluded)] for s in subjects}
            _atomic_json(take_dir / "submission.json",
                         {r.subject: {qid: p for qid, p in zip(ids[r.subject], r.preds)} for r in results})
        takes.append(summary)
    overall = merge_takes(takes)
    _atomic_json(cfg.output_dir / "summary.json", overall)
    # the settings that define the evaluation (protocol.py's same=True fields), as this run resolved them
    protocol = {k: getattr(cfg, k) for k in SAME_EVALUATION_KEYS if k != "data_dir"} | {
        "split": split, "layout": exam.layout, "ntrain": cfg.ntrain if cfg.few_shot else 0,
        "template": template.name if template else None, "backend": backend.name,
        "model": str(cfg.model or "smollm2-135m-instruct"), "batch_size": cfg.batch_size, "n_times": cfg.n_times,
        "score_unit": "percent; micro = per question, macro = mean of subjects"}
    write_run(cfg.output_dir, "eval", {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              {"All": overall.get("All"), "seconds": round(seconds, 2),
               "questions_per_second": round(n_questions / seconds, 3) if seconds and n_questions else None},
              protocol=protocol, data={"dir": str(cfg.data_dir), "fingerprint": exam_fingerprint(cfg.data_dir)})
    return overall


def build_summary(results: Sequence[SubjectResult]) -> dict:
    """The seed's summary.json layout, every score in percent; a missing subject is simply absent."""
    graded = [r for r in results if r.correct is not None]
    out: dict = {}
    for r in results:
        out[r.subject] = {"score": round(100 * r.correct / r.num, 4) if r.correct is not None else None,
                          "num": r.num, "correct": r.correct}
        if "correct_acc" in r.extra:
            out[r.subject]["acc"] = round(100 * r.extra["correct_acc"] / r.num, 4)
        if "unparsed" in r.extra:
            out[r.subject]["unparsed"] = r.extra["unparsed"]
    if not graded:
        out["All"] = {"score": None, "num": sum(r.num for r in results), "correct": None,
                      "note": "no gold answers on this split: see submission.json"}
        return out
    grouped = {}
    for cat in sorted({r.category for r in graded}):
        rs = [r for r in graded if r.category == cat]
        grouped[cat] = _agg(rs)
    out["grouped"] = grouped
    out["All"] = _agg(graded)
    return out


def letter_counts(results: Sequence[SubjectResult], questions: Sequence[Sequence[Question]]) -> dict:
    """Position bias: how often each letter was predicted, and how often it is the gold answer."""
    most = max((len(q.choices) for qs in questions for q in qs), default=4)
    pred = {x: 0 for x in layouts.letters(most)}
    gold = {x: 0 for x in layouts.letters(most)}
    unanswered = 0
    for r, qs in zip(results, questions):
        for p, q in zip(r.preds, qs):
            if q.answer is None:
                continue
            gold[q.answer] = gold.get(q.answer, 0) + 1
            if p in pred:
                pred[p] += 1
            else:
                unanswered += 1
    return {"predicted": pred, "gold": gold, "unanswered": unanswered}


def _agg(rs: Sequence[SubjectResult]) -> dict:
    num, correct = sum(r.num for r in rs), sum(r.correct for r in rs)
    out = {"correct": correct, "num": num, "score": round(100 * correct / num, 4) if num else None,
           "macro": round(statistics.mean(100 * r.correct / r.num for r in rs), 4) if rs else None,
           "subjects": len(rs)}
    if rs and all("correct_acc" in r.extra for r in rs) and num:
        out["acc"] = round(100 * sum(r.extra["correct_acc"] for r in rs) / num, 4)  # cloze: acc beside acc_norm
    return out


def merge_takes(takes: list[dict]) -> dict:
    """Mean over takes in the same layout, with the standard deviation beside each score."""
    if len(takes) == 1:
        return takes[0]
    out: dict = {}
    for key, first in takes[0].items():
        if key == "grouped":
            out[key] = {cat: _mean_entry([t[key][cat] for t in takes]) for cat in first}
        else:
            out[key] = _mean_entry([t[key] for t in takes])
    out["n_times"] = len(takes)
    return out


def _mean_entry(entries: list[dict]) -> dict:
    e = dict(entries[0])
    for k in ("score", "macro", "acc"):
        vals = [x[k] for x in entries if x.get(k) is not None]
        if vals:
            e[k] = round(statistics.mean(vals), 4)
            e[f"{k}_std"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
    if entries[0].get("correct") is not None:
        e["correct"] = statistics.mean(x["correct"] for x in entries)
    return e


def rotate(q: Question, r: int) -> Question:
    """The question with its options rotated r places (option i shows the text of option i + r)."""
    if r == 0:
        return q
    n = len(q.choices)
    choices = [q.choices[(i + r) % n] for i in range(n)]
    answer = LETTERS[(LETTERS.index(q.answer) - r) % n] if q.answer in LETTERS else q.answer
    return Question(q.id, q.question, choices, answer, q.explanation, q.source)


def _write_csv(path: Path, questions: Sequence[Question], preds, responses, marks=None) -> None:
    """The seed's per-subject CSV; `correctness` is the circular verdict when marks are given."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        n = max((len(q.choices) for q in questions), default=4)
        w.writerow(["id", "question", *layouts.letters(n), "answer", "model_output", "correctness"]
                   + (["response"] if responses else []))
        for i, (q, p) in enumerate(zip(questions, preds)):
            ok = marks[i] if marks is not None else p == q.answer
            row = [q.id, q.question, *q.choices, q.answer or "", p or "",
                   "" if q.answer is None else int(ok)]
            w.writerow(row + ([responses[i]] if responses else []))


def _atomic_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2))


def exam_fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for split, f in exam_files(root):
        h.update(f"{split}/{f.name}".encode())
        h.update(f.read_bytes())
    return h.hexdigest()
