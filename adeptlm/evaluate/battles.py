"""Pairwise battles between two models: win rates with intervals and Elo ratings, from a votes file.

A vote is one JSON line: {"prompt", "a", "b", "winner": "a" | "b" | "tie", "voter", ...}, where a
and b name the two models (the arena shows their answers in random order; the vote records which
model won, not which side). Win rate: a model's wins over the decided battles (ties left out),
with the Wilson 95% interval. Elo: the online update of Chatbot Arena's first leaderboard (K=4,
base 10, scale 400, start 1000, a tie counts half), computed over the votes in a random order
for each of 1000 bootstrap resamples; the rating reported is the median over resamples, with the
2.5 and 97.5 percentiles as its interval (the order-dependence of online Elo is what the
resampling averages out).
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from ..errors import InputError
from .compare import wilson

WINNERS = ("a", "b", "tie")
K, SCALE, BASE, START = 4.0, 400.0, 10.0, 1000.0


def read_votes(path: Path) -> list[dict]:
    """Every vote of a JSONL file; a bad line stops with its line number."""
    votes = []
    if not path.is_file():
        return votes
    from ..data.files import load_json_line, read_text

    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        v = load_json_line(path, n, line)
        if not isinstance(v, dict) or v.get("winner") not in WINNERS or not v.get("a") or not v.get("b"):
            raise InputError(path, "a vote needs a, b and winner (a, b or tie)", line=n, field="winner")
        votes.append(v)
    return votes


def elo(votes: list[dict]) -> dict[str, float]:
    ratings: dict[str, float] = {}
    for v in votes:
        a, b = v["a"], v["b"]
        ra, rb = ratings.setdefault(a, START), ratings.setdefault(b, START)
        expect_a = 1 / (1 + BASE ** ((rb - ra) / SCALE))
        score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[v["winner"]]
        ratings[a] = ra + K * (score_a - expect_a)
        ratings[b] = rb + K * ((1 - score_a) - (1 - expect_a))
    return ratings


def standings(votes: list[dict], rounds: int = 1000, seed: int = 0) -> dict:
    """Per model: battles, wins, losses, ties, win rate over decided battles with its 95% interval,
    and the bootstrap Elo (median, interval)."""
    models = sorted({v["a"] for v in votes} | {v["b"] for v in votes})
    table: dict[str, dict] = {}
    for m in models:
        wins = sum(1 for v in votes if (v["winner"] == "a" and v["a"] == m) or (v["winner"] == "b" and v["b"] == m))
        ties = sum(1 for v in votes if v["winner"] == "tie" and m in (v["a"], v["b"]))
        battles = sum(1 for v in votes if m in (v["a"], v["b"]))
        losses = battles - wins - ties
        decided = wins + losses
        lo, hi = wilson(wins, decided) if decided else (0.0, 1.0)
        table[m] = {"battles": battles, "wins": wins, "losses": losses, "ties": ties,
                    "win_rate": wins / decided if decided else None, "win_rate_95": [lo, hi]}
    if votes:
        rng = random.Random(seed)
        samples: dict[str, list[float]] = {m: [] for m in models}
        for _ in range(rounds):
            resample = [votes[rng.randrange(len(votes))] for _ in votes]
            r = elo(resample)
            for m in models:
                samples[m].append(r.get(m, START))
        for m in models:
            s = sorted(samples[m])
            table[m]["elo"] = statistics.median(s)
            table[m]["elo_95"] = [s[int(0.025 * (len(s) - 1))], s[int(0.975 * (len(s) - 1))]]
    return {"votes": len(votes), "models": table}
