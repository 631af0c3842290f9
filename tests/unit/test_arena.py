"""The blind arena: standings arithmetic, the voting flow over HTTP (the page never names the models
before the vote; the vote records the model that won), `adept arena` from its command line with a
judge served by `adept serve`'s own server and with its voting page, and the page in headless
Chromium."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from adeptlm.evaluate.battles import elo, read_votes, standings
from adeptlm.evaluate.compare import wilson
from adeptlm.serve.arena import Arena, Battle, parse_verdict, serve_arena
from conftest import ROOT, run_adept

NAMES = ("base", "tuned")


def votes_of(*winners):
    return [{"a": "base", "b": "tuned", "winner": w, "prompt": str(i)} for i, w in enumerate(winners)]


def test_win_rates_and_elo():
    assert elo(votes_of("a")) == {"base": 1002.0, "tuned": 998.0}      # K=4, equal ratings expect 0.5
    votes = votes_of(*["b"] * 7, *["a"] * 3, "tie", "tie")
    s = standings(votes, rounds=300, seed=1)
    tuned, base = s["models"]["tuned"], s["models"]["base"]
    assert (tuned["wins"], tuned["losses"], tuned["ties"], tuned["battles"]) == (7, 3, 2, 12)
    assert tuned["win_rate"] == 0.7 and tuned["win_rate_95"] == list(wilson(7, 10))
    assert tuned["elo"] > 1000 > base["elo"] and tuned["elo_95"][0] <= tuned["elo"] <= tuned["elo_95"][1]
    assert standings(votes, rounds=300, seed=1) == s                    # the bootstrap is seeded


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def arena_url(tmp_path):
    battles = [Battle(f"question {k}", {"base": f"base answer {k}", "tuned": f"tuned answer {k}"}) for k in range(5)]
    arena = Arena(battles, NAMES, tmp_path / "votes.jsonl", seed=3)
    httpd = serve_arena(arena, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.port}", tmp_path / "votes.jsonl"
    httpd.shutdown()


def test_a_vote_records_the_model_that_won(arena_url):
    base, votes = arena_url
    seen_sides = set()
    for _ in range(8):
        pair = get(base + "/next")
        assert set(pair) == {"pair", "prompt", "left", "right"}       # no model names before the vote
        left_model = pair["left"].split()[0]
        seen_sides.add(left_model)
        status, result = post(base + "/vote", {"pair": pair["pair"], "choice": "left"})
        assert status == 200 and result["left"] == left_model
        assert read_votes(votes)[-1]["winner"] == ("a" if left_model == "base" else "b")
        assert result["standings"]["votes"] == len(read_votes(votes))
    assert seen_sides == {"base", "tuned"}                            # sides are shuffled
    assert post(base + "/vote", {"pair": pair["pair"], "choice": "left"})[0] == 400   # one vote per pair
    assert post(base + "/vote", {"pair": get(base + "/next")["pair"], "choice": "maybe"})[0] == 400
    s = get(base + "/standings")
    assert s["models"]["base"]["wins"] + s["models"]["tuned"]["wins"] == 8


def test_verdict_parsing():
    assert parse_verdict("B is more accurate.\nVerdict: B") == "b"
    assert parse_verdict("Verdict：tie") == "tie" and parse_verdict("I cannot decide") is None


def test_a_judge_served_by_adept_serve_votes_with_its_rationale(tmp_path, tiny_model_dir, tiny_tokenizer):
    """The judge is `adept serve`'s own server over a backend that always prefers the first answer
    shown: since the answers are shown in random order, both models win some battles."""
    from adeptlm.backends import Backend
    from adeptlm.serve.engine import Engine
    from adeptlm.serve.api import Server

    class FirstIsBetter(Backend):
        name, model_id, n_ctx = "judge", "judge", 100000

        def _tokens(self, ids, params):
            yield from self.tokenizer("Answer A is clearer.\nVerdict: A", add_special_tokens=False)["input_ids"]

    judge = FirstIsBetter()
    judge.tokenizer = tiny_tokenizer
    srv = Server(Engine(judge), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"question {k}" for k in range(12)]))
    try:       # from the command line, as a user runs it
        rc = run_adept("arena", str(tiny_model_dir), str(tiny_model_dir), "--prompts", str(prompts), "--votes",
                       str(tmp_path / "v.jsonl"), "--max_new_tokens", "4", "--seed", "5",
                       "--judge", f"http://127.0.0.1:{srv.port}/v1")
    finally:
        srv.shutdown()
    assert rc.returncode == 0, rc.stderr[-2000:]
    votes = read_votes(tmp_path / "v.jsonl")
    assert len(votes) == 12 and all(v["rationale"].endswith("Verdict: A") for v in votes)
    assert {v["winner"] for v in votes} == {"a", "b"} and all(v["voter"] == "judge:judge" for v in votes)
    name = tiny_model_dir.name
    assert {(v["a"], v["b"]) for v in votes} == {(f"a:{name}", f"b:{name}")}      # same name twice: told apart
    printed = json.loads(rc.stdout[rc.stdout.index("{"):])                    # the standings, as JSON
    assert printed["votes"] == 12 and printed == standings(votes)


def test_arena_from_the_command_line_serves_the_voting_page(tmp_path, tiny_model_dir):
    """`adept arena A B --prompts F --port 0`: answers, then serves the page; a vote through its JSON
    routes lands in the votes file as the model that won."""
    import re
    import subprocess
    import sys

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["first question", "second question"]))
    log = tmp_path / "arena.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "adeptlm", "arena", str(tiny_model_dir), str(tiny_model_dir),
                                 "--prompts", str(prompts), "--votes", str(tmp_path / "v.jsonl"), "--port", "0",
                                 "--max_new_tokens", "3"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, base = time.time() + 180, None
        while base is None and time.time() < deadline and proc.poll() is None:
            m = re.search(r"vote at (http://[0-9.]+:\d+)/", log.read_text())
            base = m.group(1) if m else time.sleep(0.2)
        assert base, log.read_text()[-2000:]
        pair = get(base + "/next")
        assert pair["prompt"] in ("first question", "second question")
        status, result = post(base + "/vote", {"pair": pair["pair"], "choice": "tie"})
        assert status == 200 and result["standings"]["votes"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (vote,) = read_votes(tmp_path / "v.jsonl")
    assert vote["winner"] == "tie" and vote["prompt"] == pair["prompt"] and vote["voter"] == "person"


def test_arena_page_shows_a_pair_and_counts_a_vote(arena_url, browser_page):
    base, votes = arena_url
    page = browser_page
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('left').textContent.includes('answer')")
    left = page.inner_text("#left").split()[0]
    assert {left, page.inner_text("#right").split()[0]} == {"base", "tuned"}
    page.click("#vote-left")
    page.wait_for_selector('#standings tr[data-model="base"]')
    assert read_votes(votes)[-1]["winner"] == ("a" if left == "base" else "b")
    assert page.inner_text("#result") == f"left was {left}, right was {({'base', 'tuned'} - {left}).pop()}"
    winner_row = page.inner_text(f'#standings tr[data-model="{left}"]').split()
    assert winner_row[1:5] == ["1", "1", "0", "0"]          # battles, wins, losses, ties
