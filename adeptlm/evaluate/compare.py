"""`adept eval compare BEFORE AFTER`: per-category gain and loss (forgetting) between two exam runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import AdeptError


def load_summary(path: Path) -> dict:
    f = path / "summary.json" if path.is_dir() else path
    if not f.is_file():
        raise AdeptError(f"{path}: no summary.json (run `adept eval ...` with --output_dir there first)")
    data = json.loads(f.read_text(encoding="utf-8"))
    if not data.get("All") or data["All"].get("score") is None:
        raise AdeptError(f"{f}: holds no scores (a split without answers cannot be compared)")
    return data


def compare(before: dict, after: dict) -> list[dict]:
    """Rows per category, then per subject, then All: before, after, delta (percentage points)."""
    rows = []
    cats = sorted(set(before.get("grouped", {})) | set(after.get("grouped", {})))
    for cat in cats:
        b, a = before.get("grouped", {}).get(cat), after.get("grouped", {}).get(cat)
        rows.append(_row("category", cat, b, a))
    skip = {"grouped", "All", "n_times", "formulations", "best_formulation"}
    for subject in sorted((set(before) | set(after)) - skip):
        rows.append(_row("subject", subject, before.get(subject), after.get(subject)))
    rows.append(_row("all", "All", before["All"], after["All"]))
    return rows


def _row(kind, name, b, a) -> dict:
    bs = b.get("score") if b else None
    as_ = a.get("score") if a else None
    return {"kind": kind, "name": name, "before": bs, "after": as_, "num": (a or b or {}).get("num"),
            "delta": None if bs is None or as_ is None else round(as_ - bs, 2)}


def to_markdown(rows: list[dict], before_label: str, after_label: str) -> str:
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
    lines = [f"| | questions | before ({before_label}) | after ({after_label}) | change (points) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        name = f"**{r['name']}**" if r["kind"] != "subject" else r["name"]
        delta = "n/a" if r["delta"] is None else f"{r['delta']:+.2f}"
        lines.append(f"| {name} | {r['num']} | {fmt(r['before'])} | {fmt(r['after'])} | {delta} |")
    gains = [r for r in rows if r["kind"] == "category" and (r["delta"] or 0) > 0]
    losses = [r for r in rows if r["kind"] == "category" and (r["delta"] or 0) < 0]
    lines.append("")
    lines.append("Gain: " + (", ".join(f"{r['name']} {r['delta']:+.2f}" for r in gains) or "none") + ".  "
                 "Forgetting: " + (", ".join(f"{r['name']} {r['delta']:+.2f}" for r in losses) or "none") + ".")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["kind"] != "subject" and r["before"] is not None and r["after"] is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(shown)), 3.6), dpi=110)
    xs = range(len(shown))
    ax.bar([x - 0.2 for x in xs], [r["before"] for r in shown], 0.4, label="before", color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], [r["after"] for r in shown], 0.4, label="after", color="#2f6fde")
    for x, r in zip(xs, shown):
        ax.annotate(f"{r['delta']:+.1f}", (x + 0.2, r["after"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [r["name"] for r in shown], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_compare(before: Path, after: Path, output: Path | None = None) -> tuple[list[dict], Path]:
    rows = compare(load_summary(before), load_summary(after))
    out = output or (after if after.is_dir() else after.parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(to_markdown(rows, str(before), str(after)), encoding="utf-8")
    chart(rows, out / "compare.png", "before vs after")
    return rows, out


def _rows(exam_out: Path) -> dict[tuple[str, str], dict]:
    """{(csv file, question id): row} for the graded rows of an exam run's take0/*.csv (--do_save_csv)."""
    import csv

    out = {}
    for path in sorted((exam_out / "take0").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("correctness") in ("0", "1"):
                    out[(path.name, row["id"])] = row
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs: under no change each flip is
    equally likely either way, so min(b, c) is Binomial(b + c, 1/2); p = min(1, 2 P(X <= min(b, c)))."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy, in percent."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * (centre - half), 100 * (centre + half))


def paired_change(before_out: Path, after_out: Path) -> dict | None:
    """Before/after on the same questions: accuracies with 95% intervals, the questions that flipped
    (each listed), the change with the standard error of a paired difference (sqrt(b + c - (c - b)^2 / n)
    / n, b right->wrong, c wrong->right) and the exact McNemar p-value, so a change can be told from the
    exam's own noise."""
    rb, ra = _rows(before_out), _rows(after_out)
    b = {k: int(r["correctness"]) for k, r in rb.items()}
    a = {k: int(r["correctness"]) for k, r in ra.items()}
    keys = sorted(set(b) & set(a))
    n = len(keys)
    if not n:
        return None
    lost = sum(b[k] == 1 and a[k] == 0 for k in keys)
    gained = sum(b[k] == 0 and a[k] == 1 for k in keys)
    cb, ca = sum(b[k] for k in keys), sum(a[k] for k in keys)
    delta = 100 * (ca - cb) / n
    se = 100 * math.sqrt(max(lost + gained - (gained - lost) ** 2 / n, 0.0)) / n
    return {"questions": n, "before": 100 * cb / n, "after": 100 * ca / n, "before_ci": wilson(cb, n),
            "after_ci": wilson(ca, n), "change": delta, "change_se": se,
            "change_ci": (delta - 1.96 * se, delta + 1.96 * se), "right_to_wrong": lost, "wrong_to_right": gained,
            "p_value": mcnemar_exact(lost, gained),
            "flips": [{"file": k[0], "id": k[1], "question": ra[k].get("question", ""), "answer": ra[k].get("answer", ""),
                       "before": rb[k].get("model_output", ""), "after": ra[k].get("model_output", ""),
                       "direction": "right_to_wrong" if b[k] else "wrong_to_right"}
                      for k in keys if b[k] != a[k]]}

