"""`adept arena`: a blind comparison of two models' answers to the same prompts.

Both models answer every prompt first (greedy, in their own chat template, through the one backend
interface: a HF directory, a known name, an adapter or a .gguf). The page at / then shows one
prompt with the two answers side by side in random order; a person votes left, right or tie, and
the vote is appended to the votes file as the model that won (not the side), so the page never
tells which model is which until the vote is in. GET /standings gives win rates with 95% intervals
and bootstrap Elo ratings (evaluate/battles.py). With --judge URL, an OpenAI-compatible endpoint
(adept serve, vLLM, any API) votes on every prompt instead, each verdict stored with its rationale.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from ..errors import AdeptError
from ..evaluate.battles import read_votes, standings

PAGE = Path(__file__).with_name("arena.html")
JUDGE_PROMPT = ("You compare two answers to the same question. Question:\n{prompt}\n\nAnswer A:\n{first}\n\n"
                "Answer B:\n{second}\n\nWhich answer is better: more correct, more helpful, clearer? Give one "
                "or two sentences of reasons, then a last line that is exactly 'Verdict: A', 'Verdict: B' or "
                "'Verdict: tie'.")


@dataclass
class Battle:
    prompt: str
    answers: dict[str, str]      # model name -> its answer


def exam_prompts(folder: Path, limit: int | None = None) -> list[str]:
    """An exam's questions without their options: what the subject's users would ask."""
    from ..data.exams import read_exam

    exam = read_exam(folder)
    out = [q.question for subject in exam.subjects.values() for split in ("val", "test", "dev")
           for q in subject.get(split, [])]
    return out[:limit] if limit else out


def answer_all(models: dict[str, str], prompts: list[str], max_new_tokens: int) -> list[Battle]:
    """Each model's greedy answer to each prompt, one model loaded at a time."""
    from ..backends import chat_greedy

    answers = {name: chat_greedy(spec, prompts, max_new_tokens) for name, spec in models.items()}
    return [Battle(p, {name: answers[name][i] for name in models}) for i, p in enumerate(prompts)]


def parse_verdict(text: str) -> str | None:
    m = re.findall(r"verdict\s*[:：]\s*(a|b|tie)\b", text, flags=re.IGNORECASE)
    return m[-1].lower() if m else None


def judge(url: str, model: str, battle: Battle, names: tuple[str, str], rng: random.Random,
          api_key: str | None = None) -> dict:
    """One verdict from an OpenAI-compatible chat endpoint; the answers go in random order."""
    first, second = names if rng.random() < 0.5 else names[::-1]
    body = {"model": model, "temperature": 0, "max_tokens": 256, "messages": [{"role": "user", "content":
            JUDGE_PROMPT.format(prompt=battle.prompt, first=battle.answers[first], second=battle.answers[second])}]}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            text = json.loads(resp.read())["choices"][0]["message"]["content"] or ""
    except OSError as exc:
        raise AdeptError(f"judge {url}: {exc}") from None
    verdict = parse_verdict(text)
    side = {"a": first, "b": second}.get(verdict or "")
    winner = "tie" if side is None else ("a" if side == names[0] else "b")
    return {"winner": winner, "rationale": text, "verdict_parsed": verdict is not None}


class Arena:
    def __init__(self, battles: list[Battle], names: tuple[str, str], votes: Path, seed: int = 0):
        self.battles, self.names, self.votes = battles, names, votes
        self.rng = random.Random(seed)
        self.shown: dict[str, tuple[int, bool]] = {}    # pair id -> (battle, swapped)
        self.lock = threading.Lock()
        read_votes(votes)                                # a bad votes file stops before serving

    def next_pair(self) -> dict:
        with self.lock:
            k = self.rng.randrange(len(self.battles))
            swapped = self.rng.random() < 0.5
            pid = uuid.uuid4().hex[:16]
            self.shown[pid] = (k, swapped)
        b = self.battles[k]
        left, right = (self.names[1], self.names[0]) if swapped else self.names
        return {"pair": pid, "prompt": b.prompt, "left": b.answers[left], "right": b.answers[right]}

    def vote(self, pid: str, choice: str, voter: str = "person", rationale: str | None = None) -> dict:
        if choice not in ("left", "right", "tie"):
            raise ValueError("choice must be left, right or tie")
        with self.lock:
            if pid not in self.shown:
                raise KeyError(pid)
            k, swapped = self.shown.pop(pid)
            left_model = self.names[1] if swapped else self.names[0]
            winner = "tie" if choice == "tie" else \
                ("a" if (left_model == self.names[0]) == (choice == "left") else "b")
            self.record(k, winner, voter, rationale)
        return {"winner": winner, "left": left_model, "right": self.names[0] if swapped else self.names[1]}

    def record(self, k: int, winner: str, voter: str, rationale: str | None = None) -> None:
        b = self.battles[k]
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "prompt": b.prompt, "a": self.names[0],
                "b": self.names[1], "winner": winner, "voter": voter,
                "answers": {n: b.answers[n] for n in self.names}}
        if rationale is not None:
            line["rationale"] = rationale
        self.votes.parent.mkdir(parents=True, exist_ok=True)
        with self.votes.open("a", encoding="utf-8") as f:    # one whole line per write: appends stay readable
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

    def standings(self) -> dict:
        return standings(read_votes(self.votes))


def serve_arena(arena: Arena, host: str, port: int):
    """The voting page and its JSON routes, on uvicorn (asgi.HttpServer: .port, .serve_forever, .shutdown)."""
    from .asgi import HttpServer

    app = FastAPI(title="adept arena", redoc_url=None)

    def _json(status: int, obj: dict) -> Response:
        # ensure_ascii off: Chinese prompts and answers travel as UTF-8, not \\u escapes
        return Response(json.dumps(obj, ensure_ascii=False).encode("utf-8"), status, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def _no_route(request: Request, exc: HTTPException):
        return _json(exc.status_code, {"error": f"no route {request.url.path}"})

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_bytes())

    @app.get("/next", summary="a prompt and its two answers, sides in random order")
    async def next_pair():
        return _json(200, arena.next_pair())

    @app.get("/standings", summary="win rates with 95% intervals and bootstrap Elo")
    async def standings_():
        return _json(200, arena.standings())

    @app.post("/vote", summary='{"pair": id, "choice": "left" | "right" | "tie"}')
    async def vote(request: Request):
        try:
            body = json.loads((await request.body())[: 1 << 16])
            result = arena.vote(str(body.get("pair")), body.get("choice"))
        except (ValueError, json.JSONDecodeError, AttributeError) as exc:
            return _json(400, {"error": str(exc)})
        except KeyError:
            return _json(400, {"error": "unknown or already voted pair: ask /next again"})
        return _json(200, {**result, "standings": arena.standings()})

    return HttpServer(app, host, port)


def run_arena(a: str, b: str, prompts: list[str], votes: Path, max_new_tokens: int = 128, host: str = "127.0.0.1",
              port: int = 8001, judge_url: str | None = None, judge_model: str = "judge",
              judge_key: str | None = None, seed: int = 0) -> Arena:
    if not prompts:
        raise AdeptError("adept arena: no prompts (give --prompts FILE or --exam FOLDER)")
    names = (Path(a).name or a, Path(b).name or b)
    if names[0] == names[1]:
        names = (f"a:{names[0]}", f"b:{names[1]}")
    print(f"adept arena: {len(prompts)} prompts; answering with {names[0]}, then {names[1]}", flush=True)
    arena = Arena(answer_all({names[0]: a, names[1]: b}, prompts, max_new_tokens), names, votes, seed)
    if judge_url:
        rng = random.Random(seed)
        for k, battle in enumerate(arena.battles):
            v = judge(judge_url, judge_model, battle, names, rng, judge_key)
            arena.record(k, v["winner"], f"judge:{judge_model}", v["rationale"])
        print(json.dumps(arena.standings(), indent=2, ensure_ascii=False))
        return arena
    httpd = serve_arena(arena, host, port)
    print(f"adept arena: vote at http://{host}:{httpd.port}/ ; votes go to {votes}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return arena

