"""The before/after report of an `adept run`: report.md and a self-contained report.html.

Everything shown is read back from the stages' outputs (summary.json, run.json, check.json), so
`adept report RUN_DIR` rebuilds the same report at any time. Charts are PNG files written beside
report.md and embedded in report.html as data URIs, so the HTML is one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..atomic import write_text
from ..errors import AdeptError
from ..runrecord import read_run
from ..train.stages import NAMES as TRAIN_NAMES


def _summary(path: Path) -> dict | None:
    f = path / "summary.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def reading_formulation(root: Path, key: str) -> str | None:
    """The formulation an exam scored in both (letter and cloze) is read in, before and after alike:
    OLMES's rule on the base model's answers pooled over the run's exams (exam.model_formulation).
    None for an exam scored one way."""
    from .exam import model_formulation

    if not (_summary(root / "baseline" / key) or {}).get("formulations"):
        return None
    return model_formulation([_summary(d) for d in sorted((root / "baseline").iterdir()) if d.is_dir()])


def exam_dir(root: Path, side: str, key: str) -> Path:
    """Where one side's per-question results of an exam lie (the reading formulation's folder when
    the exam was scored in both)."""
    form = reading_formulation(root, key)
    return root / side / key / form if form else root / side / key


def formulations_md(root: Path, keys: list[str], headline: str | None = None) -> list[str]:
    """Every exam scored in more than one formulation (mode both, or eval.also beside the headline):
    each one's before and after with intervals, the paired change and its McNemar p, and which one the
    headline reads (for both: chosen on the base model; else the recipe's mode, `headline`)."""
    from .compare import paired_change

    lines, chosen = [], False
    for key in keys:
        form = reading_formulation(root, key)
        # (label, folder under baseline/ and after/, read): the scored forms of this exam
        forms = [(f, f"{key}/{f}", f == form) for f in ("letter", "cloze")] if form else []
        if not form:
            extra = [f for f in ("letter", "cloze", "generate") if (root / "baseline" / key / f / "take0").is_dir()]
            if extra:
                forms = [(headline or "headline", key, True)] + [(f, f"{key}/{f}", False) for f in extra]
        chosen = chosen or bool(form)
        for f, sub, read in forms:
            c = paired_change(root / "baseline" / sub, root / "after" / sub)
            if not c:
                continue
            (bl, bh), (al, ah), (cl, ch) = c["before_ci"], c["after_ci"], c["change_ci"]
            label = f + (" (acc_norm)" if f == "cloze" else "") + (" **read**" if read else "")
            lines.append(f"| {EXAM_LABELS.get(key, key)} | {label} | {c['before']:.1f}% ({bl:.1f}-{bh:.1f}) | "
                         f"{c['after']:.1f}% ({al:.1f}-{ah:.1f}) | {c['change']:+.1f} ({cl:+.1f} to {ch:+.1f}) | "
                         f"{c['p_value']:.2g} |")
    if not lines:
        return []
    rule = ("the headline reads the formulation in which the base model answered more questions over all of the "
            "run's exams (OLMES's rule, pooled so that a subject it cannot know yet, at chance both ways, does not "
            "decide), before and after alike." if chosen else
            f"the headline reads the recipe's own protocol ({headline or 'its eval: mode'}); the others are "
            "scored beside it (eval.also) on the same questions, so that any model is seen in both forms.")
    return ["## Formulations", "", "Each exam scored more than one way (OLMES): letter = the options listed and "
            "the answer letter's logit; cloze = the question alone and each option's text scored as its answer "
            "(per character); generate = the model's greedy answer, the option it names. A model can know an "
            "answer and still fail the letter form if it cannot tie letters to options; " + rule, "",
            "| exam | formulation | before (95% interval) | after | change (95% interval) | McNemar p |",
            "| --- | --- | ---: | ---: | ---: | ---: |", *lines, ""]


def exam_rows(before: dict | None, after: dict | None) -> list[dict]:
    """Per subject (the demo's categories) and All: questions, before, after, gain in points."""
    if not before or not after:
        return []
    from .compare import compare

    return [r for r in compare(before, after) if r["kind"] in ("subject", "all")]


def _chart_bars(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["before"] or 0 for r in rows], width=0.4, label="before", color="#9aa5b1")
    ax.bar([i + 0.2 for i in x], [r["after"] or 0 for r in rows], width=0.4, label="after", color="#1f77b4")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n.replace("quenta_", "").replace("general_", "") for n in names], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(25, color="#cc4444", linewidth=0.8, linestyle=":", label="chance (4 options)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def method_line(run: dict | None) -> str:
    """A training stage's method, settings and the last values its trainer logged, from its run.json."""
    m = (run or {}).get("metrics") or {}
    method = m.get("method")
    if not method:
        return ""
    settings = ", ".join(f"{k} {','.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in method.items() if k != "name" and v is not None)
    last = (m.get("method_history") or [{}])[-1]
    logged = ", ".join(f"{k} {v:.3g}" for k, v in last.items() if k != "step" and isinstance(v, (int, float)))
    return f"{method['name']} ({settings})" + (f", at the last logged step: {logged}" if logged else "")


def _chart_loss(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    offset = 0
    for stage, hist in histories.items():
        if not hist:
            continue
        ax.plot([offset + h["step"] for h in hist], [h["loss"] for h in hist], marker=".", label=stage)
        offset += hist[-1]["step"]
    ax.set_xlabel("step (stages one after another)")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table_md(rows: list[dict]) -> str:
    fmt = lambda x: "n/a" if x is None else f"{x:.1f}"  # noqa: E731
    out = ["| | questions | before | after | gain (points) |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        name = "**All**" if r["kind"] == "all" else r["name"]
        delta = "n/a" if r["delta"] is None else f"{r['delta']:+.1f}"
        out.append(f"| {name} | {r['num']} | {fmt(r['before'])} | {fmt(r['after'])} | {delta} |")
    return "\n".join(out)


def _table_html(rows: list[dict], table_id: str) -> str:
    fmt = lambda x: "n/a" if x is None else f"{x:.1f}"  # noqa: E731
    body = []
    for r in rows:
        cls = "all" if r["kind"] == "all" else ""
        delta = "n/a" if r["delta"] is None else f"{r['delta']:+.1f}"
        sign = "gain" if (r["delta"] or 0) > 0 else "loss" if (r["delta"] or 0) < 0 else ""
        body.append(f"<tr class='{cls}'><td>{html.escape(r['name'])}</td><td>{r['num']}</td>"
                    f"<td>{fmt(r['before'])}</td><td>{fmt(r['after'])}</td><td class='{sign}'>{delta}</td></tr>")
    return (f"<table id='{table_id}'><thead><tr><th></th><th>questions</th><th>before (%)</th><th>after (%)</th>"
            f"<th>gain (points)</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


EXAM_LABELS = {"exam": "Subject exam", "general_exam": "General exam (forgetting)"}


def significance(p: float | None) -> str:
    if p is None:
        return ""
    verdict = "distinguishable from noise at the 5% level" if p < 0.05 else "not distinguishable from noise"
    return f"exact McNemar p = {p:.3g}: {verdict}"


def change_line(c: dict) -> str:
    """One exam's before/after in words, with its uncertainty and significance."""
    lo, hi = c["change_ci"]
    sig = significance(c.get("p_value"))
    return (f"{c['before']:.1f}% → {c['after']:.1f}% ({c['change']:+.1f} points, 95% interval {lo:+.1f} to "
            f"{hi:+.1f}; {c['wrong_to_right']} questions gained, {c['right_to_wrong']} lost{'; ' + sig if sig else ''})"
            f" over {c['questions']} questions; one question is {100 / c['questions']:.1f} points.")


FLIPS_SHOWN = 8  # per direction and exam in report.md; every flip is in flips-<exam>.csv


def write_flips(root: Path, key: str, c: dict) -> Path:
    """Every question of one exam that changed between before and after, as CSV beside the report."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["direction", "file", "id", "question", "answer", "before", "after"])
    for f in c.get("flips", []):
        w.writerow([f["direction"], f["file"], f["id"], f["question"], f["answer"], f["before"], f["after"]])
    return write_text(root / f"flips-{key}.csv", buf.getvalue())


def flips_md(key: str, c: dict) -> list[str]:
    out = []
    for direction, label in (("right_to_wrong", "right → wrong (forgotten)"), ("wrong_to_right", "wrong → right")):
        rows = [f for f in c.get("flips", []) if f["direction"] == direction]
        if not rows:
            continue
        out += [f"{label}: {len(rows)} questions" + (f", first {FLIPS_SHOWN}" if len(rows) > FLIPS_SHOWN else ""), "",
                "| question | gold | before | after |", "| --- | :-: | :-: | :-: |"]
        out += [f"| {f['question'].replace('|', '/')[:80]} | {f['answer']} | {f['before']} | {f['after']} |"
                for f in rows[:FLIPS_SHOWN]]
        out.append("")
    return [f"### {EXAM_LABELS.get(key, key)}: questions that changed (all in flips-{key}.csv)", "", *out] if out else []


def _md_html(lines: list[str]) -> list[str]:
    """The few markdown shapes the report's generated sections use (headings, pipe tables, paragraphs)."""
    out, table = [], []

    def close():
        if table:
            out.append("<table>" + "".join(table) + "</table>")
            table.clear()

    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            tag = "th" if not table else "td"
            table.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        close()
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    close()
    return out


def retention_md(root: Path, budget: dict) -> list[str]:
    """The retention probes against the base model, and the recipe's forgetting budget checked."""
    m = (read_run(root / "retention") or {}).get("metrics") or {}
    lines = []
    if "text" in m:
        t = m["text"]
        lines.append(f"- general text ({t['tokens']} tokens): perplexity {t['base_perplexity']:.2f} (base) → "
                     f"{t['perplexity']:.2f}; mean KL(base ‖ tuned) {t['mean_kl']:.4f} nats per token; same top "
                     f"token at {100 * t['same_top_token']:.1f}% of positions")
        if budget.get("max_kl") is not None:
            ok = t["mean_kl"] <= float(budget["max_kl"])
            lines.append(f"- budget max_kl {budget['max_kl']}: {'within' if ok else 'OVER'}")
    if "greedy" in m:
        g = m["greedy"]
        lines.append(f"- general prompts: {g['same_answers']}/{g['prompts']} greedy answers ({g['max_new_tokens']} "
                     "tokens) are the base model's own")
        if budget.get("min_same_answers") is not None:
            ok = (g["same_share"] or 0) >= float(budget["min_same_answers"])
            lines.append(f"- budget min_same_answers {budget['min_same_answers']}: {'within' if ok else 'OVER'}")
        if g["changed"]:
            lines += ["", "| prompt | base model | tuned model |", "| --- | --- | --- |"]
            cell = lambda x: x.replace("|", "/").replace("\n", " ")[:90]  # noqa: E731
            lines += [f"| {cell(c['prompt'])} | {cell(c['base'])} | {cell(c['tuned'])} |"
                      for c in g["changed"][:FLIPS_SHOWN]]
    if not lines:
        return []
    return ["## Retention (against the base model)", "", *lines, ""]


def select_md(root: Path) -> list[str]:
    """The selection stage: every candidate on the selection exam and the probes, the chosen one, the
    budget and whether it was met (adeptlm/select.py)."""
    m = (read_run(root / "select") or {}).get("metrics")
    if not m:
        return []
    rows = m["candidates"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = ["## Selection: gain against forgetting", "",
             f"{len(rows)} candidates (the trained adapter at scales α, and saved checkpoints) were scored on the "
             f"selection exam ({m.get('formulation')}), the general exam and the retention probes. The reported "
             "subject exam played no part in choosing (the selection exam asks the same facts in another wording); "
             "the general exam and the probes did, as the forgetting budget, so their figures below are not held "
             "out from the choice. Gain is on the selection exam, from α = 0 (the base model).", "",
             "| candidate | α | selection exam | gain | general exam | mean KL | answers kept | |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        kept = f"{r['same_answers']}/{r['prompts']}" if r.get("prompts") else "n/a"
        lines.append(f"| {r['name']} | {r['alpha']:g} | {fmt(r.get('select_exam'), '.1f')} | {r['gain']:+.1f} | "
                     f"{fmt(r.get('general_exam'), '.1f')} | {fmt(r.get('mean_kl'), '.3f')} | {kept} | "
                     f"{'chosen' if r['name'] == m['chosen'] else ''} |")
    budget = ", ".join(f"{k} {v:g}" for k, v in (m.get("budget") or {}).items()) or "none set"
    lines += ["", f"Forgetting budget: {budget}."]
    if m.get("failed_budget"):
        lines.append(f"No candidate met the budget: the one that forgets least ({m['chosen']}) was chosen; it breaks "
                     f"{', '.join(m['failed_budget'])}.")
    else:
        lines.append(f"Chosen: {m['chosen']} (α {m['alpha']:g}), the largest selection gain inside the budget.")
    lines += [f"- {n}" for n in m.get("notes") or []]
    return lines + [""]


def _chart_frontier(root: Path, path: Path) -> bool:
    """Selection gain against mean KL (or the general exam's change), a point per candidate."""
    m = (read_run(root / "select") or {}).get("metrics")
    if not m:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = m["candidates"]
    by_kl = all(r.get("mean_kl") is not None for r in rows)
    xs = [r["mean_kl"] if by_kl else -(r.get("general_change") or 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ax.scatter(xs, [r["gain"] for r in rows], color="#1f77b4")
    for x, r in zip(xs, rows):
        ax.annotate(r["name"].replace("alpha=", "α "), (x, r["gain"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
        if r["name"] == m["chosen"]:
            ax.scatter([x], [r["gain"]], s=160, facecolors="none", edgecolors="#d62728", label="chosen")
    limit = (m.get("budget") or {}).get("max_kl" if by_kl else "max_general_drop")
    if limit is not None:
        ax.axvline(limit, color="#cc4444", linestyle=":", label="budget")
    ax.set_xlabel("mean KL(base ‖ candidate), nats per token" if by_kl else "general exam drop (points)")
    ax.set_ylabel("selection exam gain (points)")
    ax.set_title("Gain against forgetting: every candidate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def contamination_md(root: Path) -> list[str]:
    """The contamination stage's finding per exam, and the first overlapping items."""
    run = read_run(root / "contamination")
    if not run:
        return []
    n = run.get("config", {}).get("ngram")
    lines = ["## Contamination", "", f"Exam items (question and correct option) sharing a run of {n} tokens "
             "(words, or single CJK characters) with the training data, checked before training:", ""]
    if run.get("config", {}).get("drop"):
        lines += ["These items are left out of every exam score in this report, before and after "
                  "(recipe `contamination: {drop: true}`).", ""]
    for key, m in run.get("metrics", {}).items():
        lines.append(f"- {EXAM_LABELS.get(key, key)}: {m['contaminated']} of {m['checked']} items")
        lines += [f"  - {o['subject']} {o['id']}: {o['question'][:70]} (in {Path(o['source']).name})"
                  for o in m["items"][:FLIPS_SHOWN]]
    return lines + [""]


def _read_in(root: Path, key: str) -> str:
    form = reading_formulation(root, key)
    return f" ({form} formulation, the base model's better over the run's exams)" if form else ""


def bias_md(root: Path, keys: list[str]) -> list[str]:
    """Predicted letters before and after against the gold letters, per exam (position bias)."""
    lines = []
    for key in keys:
            # an exam scored in both formulations: the letter one shows the bias
        sub = "letter" if reading_formulation(root, key) else ""
        sides = {side: ((_summary(root / side / key / sub) or {}).get("All") or {}).get("letters")
                 for side in ("baseline", "after")}
        if not all(sides.values()):
            continue
        gold = sides["after"]["gold"]
        fmt = lambda d: " / ".join(str(d.get(x, 0)) for x in gold)  # noqa: E731  (A / B / C / D, or as many as the exam has)
        lines.append(f"| {EXAM_LABELS.get(key, key)} | {fmt(gold)} | {fmt(sides['baseline']['predicted'])} | "
                     f"{fmt(sides['after']['predicted'])} |")
    if not lines:
        return []
    return ["## Position bias", "", "How often each letter (A / B / C / D) is the gold answer and how often the "
            "model chose it; a model that always picks one letter scores that letter's share.", "",
            "| exam | gold | predicted before | predicted after |", "| --- | --- | --- | --- |", *lines, ""]


def write_report(root: Path, recipe: dict | None = None) -> list[Path]:
    """Write report.md, report.html and the chart PNGs into root (an `adept run` directory)."""
    root = Path(root)
    if not (root / "baseline").is_dir() or not (root / "after").is_dir():
        raise AdeptError(f"{root}: not an `adept run` directory with baseline/ and after/ (run it first)")
    if recipe is None:
        f = root / "recipe.json"
        recipe = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {"name": root.name}
    from .compare import paired_change

    def rows(key):
        return exam_rows(_summary(exam_dir(root, "baseline", key)), _summary(exam_dir(root, "after", key)))

    subj, gen = rows("exam"), rows("general_exam")
    # every exam scored before and after (the recipe's own two, then its `exams:`), paired per question
    keys = ["exam", "general_exam", *(recipe.get("exams") or {})]
    changes = {k: c for k in keys if (root / "after" / k).is_dir()
               and (c := paired_change(exam_dir(root, "baseline", k), exam_dir(root, "after", k)))}
    extra = {k: rows(k) for k in changes if k not in ("exam", "general_exam")}
    base_run, after_run = read_run(root / "baseline") or {}, read_run(root / "after") or {}
    ppl_b = base_run.get("metrics", {}).get("heldout_perplexity")
    ppl_a = after_run.get("metrics", {}).get("heldout_perplexity")
    histories = {s: (read_run(root / s) or {}).get("metrics", {}).get("loss_history", [])
                 for s in TRAIN_NAMES if (root / s).is_dir()}
    check = (read_run(root / "check") or {}).get("metrics")
    export = read_run(root / "export") or {}

    charts = {}
    if subj:
        charts["subject"] = root / "report-subject.png"
        _chart_bars(subj, charts["subject"], "Subject exam: accuracy before and after training")
    if gen:
        charts["general"] = root / "report-general.png"
        _chart_bars(gen, charts["general"], "General exam (forgetting): before and after")
    if _chart_frontier(root, root / "report-frontier.png"):
        charts["frontier"] = root / "report-frontier.png"
    if any(histories.values()):
        charts["loss"] = root / "report-loss.png"
        _chart_loss(histories, charts["loss"])

    headline = [f"{EXAM_LABELS.get(k, k)}{_read_in(root, k)}: {change_line(c)}" for k, c in changes.items()]
    if ppl_b and ppl_a:
        headline.append(f"Held-out subject perplexity: {ppl_b:.2f} → {ppl_a:.2f}.")
    ret = (read_run(root / "retention") or {}).get("metrics") or {}
    if "text" in ret or "greedy" in ret:
        parts_ = []
        if "text" in ret:
            parts_.append(f"mean KL(base ‖ tuned) {ret['text']['mean_kl']:.4f} on general text")
        if "greedy" in ret:
            parts_.append(f"{ret['greedy']['same_answers']}/{ret['greedy']['prompts']} general answers unchanged")
        headline.append("Retention: " + "; ".join(parts_) + ".")
    sel = (read_run(root / "select") or {}).get("metrics")
    if sel:
        headline.append(f"Model: {sel['chosen']} (α {sel['alpha']:g}), chosen of {len(sel['candidates'])} candidates on "
                        "the selection exam and the retention probes" + (" (no candidate met the budget)"
                                                                           if sel.get("failed_budget") else "") + ".")
    # the protocol as the evaluation itself recorded it (adeptlm.evaluate.protocol), not the recipe's text
    proto = (read_run(root / "after" / "exam") or {}).get("protocol") or {}
    limit = f", at most {proto['limit']} questions per subject" if proto.get("limit") else ""
    protocol = (f"exam mode {proto.get('mode')}, {'chat template' if proto.get('with_prompt') else 'plain prompt'}, "
                f"prompt style {proto.get('prompt_style')}, {proto.get('ntrain')}-shot, {proto.get('split')} split"
                f"{limit}; the same protocol before and after")
    versions = after_run.get("versions", {})
    training = []
    for stage in TRAIN_NAMES:
        d = (read_run(root / stage) or {}).get("data") or {}
        if any(d.get(k) is not None for k in ("records", "tokens", "train_pairs")):
            what = (f"{d['records']} records" if d.get("records") is not None
                    else f"{d['train_pairs']} preference pairs" if d.get("train_pairs") is not None
                    else f"{d.get('documents', '?')} documents, {d.get('tokens')} tokens")
            training.append(f"{stage} {what} ({', '.join(Path(f).name for f in d.get('files', []))})")
    replay = (read_run(root / "replay") or {}).get("metrics")
    if replay:
        training.append(f"of the SFT records, {replay['records']} are the base model's own answers to general "
                        "questions (replay against forgetting)")
    data_line = "training data: " + "; ".join(training) if training else ""
    methods = [m for s in TRAIN_NAMES if (m := method_line(read_run(root / s)))]
    if methods:
        data_line = "; ".join(([data_line] if data_line else []) + ["training: " + "; ".join(methods)])
    check_lines = []
    if check:
        check_lines.append(f"tokenization: {check['tokenization_texts'] - len(check['tokenization_mismatches'])}/"
                           f"{check['tokenization_texts']} sample texts identical to the HF tokenizer")
        check_lines.append(f"greedy ({check['greedy_tokens']} tokens): {check['greedy_identical']}/"
                           f"{check['greedy_prompts']} prompts identical, token agreement "
                           f"{100 * check['greedy_token_agreement']:.1f}%")
        if check.get("logits"):
            g = check["logits"]
            check_lines.append(f"logits over {g['positions']} positions: mean KL(HF ‖ GGUF) {g['mean_kl']:.2e}, "
                               f"NMSE {g['nmse']:.2e}, same top token {100 * g['same_top']:.1f}%: {g['verdict']}")
        if check.get("exam"):
            e = check["exam"]
            check_lines.append(f"subject exam: GGUF ({export.get('config', {}).get('outtype', '?')}) "
                               f"{e['gguf_accuracy']:.1f}% vs HF merged model {e['hf_accuracy']:.1f}%")
    md = [f"# adept run: {recipe.get('name', root.name)}", "", *[f"- {h}" for h in headline], ""]
    selection = select_md(root)
    if selection:  # the frontier first, then the reported exams of the chosen model
        md += selection + (["![frontier](report-frontier.png)", ""] if "frontier" in charts else [])
    if subj:
        md += ["## Subject exam", "", _table_md(subj), "", "![subject](report-subject.png)", ""]
    if gen:
        md += ["## General exam (forgetting)", "", _table_md(gen), "", "![general](report-general.png)", ""]
    for k, rows in extra.items():
        md += [f"## {k} (forgetting, your exam)", "", _table_md(rows), ""]
    # the validation sections, written once as markdown and rendered for the HTML page below
    read_mode = (recipe.get("eval") or {}).get("mode")
    validation = (formulations_md(root, list(changes), read_mode) + retention_md(root, recipe.get("retention") or {})
                  + contamination_md(root) + bias_md(root, list(changes)))
    md += validation
    flip_lines = [line for k, c in changes.items() for line in flips_md(k, c)]
    for k, c in changes.items():
        write_flips(root, k, c)
    if flip_lines:
        md += ["## Questions that changed", "", *flip_lines]
    if ppl_b and ppl_a:
        md += ["## Perplexity", "", f"Held-out subject text: {ppl_b:.2f} before, {ppl_a:.2f} after.", ""]
    if "loss" in charts:
        md += ["## Training", "", "![loss](report-loss.png)", ""]
    if check_lines:
        md += ["## GGUF check (llama.cpp)", "", *[f"- {c}" for c in check_lines], ""]
    md += ["## Protocol", "", f"- {protocol}", *([f"- {data_line}"] if data_line else []),
           f"- model: {recipe.get('model', 'smollm2-135m-instruct')}",
           f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}", ""]
    (root / "report.md").write_text("\n".join(md), encoding="utf-8")

    def img(key: str, alt: str) -> str:
        if key not in charts:
            return ""
        data = base64.b64encode(charts[key].read_bytes()).decode()
        return f"<img id='chart-{key}' class='chart' alt='{alt}' src='data:image/png;base64,{data}'>"

    parts = [f"<h1>adept run: {html.escape(str(recipe.get('name', root.name)))}</h1>",
             "<ul class='headline'>" + "".join(f"<li>{html.escape(h)}</li>" for h in headline) + "</ul>"]
    if selection:
        parts += _md_html(selection) + [img("frontier", "gain against forgetting")]
    if subj:
        parts += ["<h2>Subject exam</h2>", _table_html(subj, "gain-table"), img("subject", "subject exam chart")]
    if gen:
        parts += ["<h2>General exam (forgetting)</h2>", _table_html(gen, "general-table"),
                  img("general", "general exam chart")]
    for k, rows in extra.items():
        parts += [f"<h2>{html.escape(k)} (forgetting, your exam)</h2>", _table_html(rows, f"{k}-table")]
    parts += _md_html(validation)
    if flip_lines:
        parts += _md_html(["## Questions that changed", "", *flip_lines])
    if ppl_b and ppl_a:
        parts += ["<h2>Perplexity</h2>", f"<p>Held-out subject text: {ppl_b:.2f} before, {ppl_a:.2f} after.</p>"]
    if "loss" in charts:
        parts += ["<h2>Training</h2>", img("loss", "training loss chart")]
    if check_lines:
        parts += ["<h2>GGUF check (llama.cpp)</h2>",
                  "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in check_lines) + "</ul>"]
    parts += ["<h2>Protocol</h2>", f"<p>{html.escape(protocol)}</p>",
              *([f"<p>{html.escape(data_line)}</p>"] if data_line else []),
              f"<p class='versions'>{html.escape(', '.join(f'{k} {v}' for k, v in versions.items()))}</p>"]
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
             "text-align:right}td:first-child{text-align:left}tr.all{font-weight:bold}.gain{color:#1a7f37}"
             ".loss{color:#b42318}.chart{display:block;max-width:100%;margin:1em 0}.versions{color:#666;"
             "font-size:small}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>adept run report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    (root / "report.html").write_text(page, encoding="utf-8")
    return [root / "report.md", root / "report.html", *charts.values()]
