"""`adept serve`: an OpenAI-compatible HTTP server over one model.

Endpoints: POST /v1/chat/completions and /v1/completions (streamed as server-sent events when
"stream": true), POST /v1/embeddings, GET /v1/models and /health, a chat page at / (chat.html) and
the OpenAPI page at /docs. Prompts are tokenized before they are queued, so a prompt longer than
the context is refused (400, context_length_exceeded) at once, and usage counts are the rendered
prompt's tokens. Generation runs on one worker thread that takes jobs from a bounded queue: a full
queue answers 503 at once instead of letting clients hang; jobs waiting together are decoded in one
batch (transformers) or as parallel sequences (llama.cpp), and on vLLM a job joins the running ones
at the engine's next step (its own scheduler's continuous batching). Errors are JSON in OpenAI's shape
({"error": {"message", "type", "param", "code"}}) with a 4xx status for anything the request got
wrong.

This module is the engine side (the queue, the worker, the request parsers); the HTTP side is
api.py (FastAPI routes and the Server a caller starts) on asgi.py (uvicorn on a socket bound up
front).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..backends import Delta, Detokenizer, GenParams

MAX_BODY = 4 * 2 ** 20
DRAIN_LIMIT = 64 * 2 ** 20   # an over-large body is read and dropped up to this size, so the 413 reaches the client
MAX_EMBED_INPUTS = 256
CHAT_PAGE = Path(__file__).with_name("chat.html")   # self-contained: no script or style from elsewhere


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.close = close             # the connection is closed after the answer (a body left unread)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Job:
    kind: str                      # "chat", "completion" or "embeddings"
    payload: object                # prompt ids, or the texts to embed
    params: GenParams | None
    events: "queue.Queue" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    wake: Callable[[], None] | None = None   # tells the request's event loop that an event is waiting
    finished: bool = False                   # the request has read the end marker

    def put(self, item) -> None:
        """From the worker: a Delta, the embeddings, an exception, or None for the end."""
        self.events.put(item)
        if self.wake is not None:
            self.wake()


def _number(body: dict, name: str, default, lo: float, hi: float, integer: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise RequestError(400, f"'{name}' must be {'an integer' if integer else 'a number'}", name)
    if not lo <= value <= hi:
        raise RequestError(400, f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return value


def parse_params(body: dict, n_ctx: int) -> GenParams:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, "'max_tokens' must be a positive integer", "max_tokens")
        if max_tokens > n_ctx:
            raise RequestError(400, f"'max_tokens' {max_tokens} is longer than the model's context of {n_ctx} "
                                    "tokens", "max_tokens", code="context_length_exceeded")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise RequestError(400, "'stop' must be a string or a list of at most 4 strings", "stop")
    n = body.get("n", 1)
    if n != 1:
        raise RequestError(400, "only n=1 is supported", "n")
    if not isinstance(body.get("stream", False), bool):
        raise RequestError(400, "'stream' must be a boolean", "stream")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, "'seed' must be an integer", "seed")
    return GenParams(max_tokens=max_tokens or min(512, n_ctx),
                     temperature=float(_number(body, "temperature", 0.7, 0.0, 2.0)),
                     top_p=float(_number(body, "top_p", 0.95, 0.0, 1.0)), seed=seed, stop=stop)


def parse_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if messages is None:
        raise RequestError(400, "'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise RequestError(400, f"messages[{i}] must be an object with role system, user or assistant",
                               f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):          # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(400, f"messages[{i}].content: only text parts are supported",
                                   f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(400, f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out


def parse_embedding_input(body: dict) -> list[str]:
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise RequestError(400, "'input' must be a non-empty string or a list of non-empty strings", "input")
    if len(texts) > MAX_EMBED_INPUTS:
        raise RequestError(400, f"'input' holds {len(texts)} texts; at most {MAX_EMBED_INPUTS} per request", "input")
    return texts


def fit_context(ids: list[int], params: GenParams, asked: bool, n_ctx: int) -> None:
    """Refuse a prompt that leaves no room in the context (or less than the max_tokens asked for);
    without an explicit max_tokens, generation is cut to the room left."""
    room = n_ctx - len(ids)
    if room <= 0 or (asked and params.max_tokens > room):
        raise RequestError(400, f"the prompt has {len(ids)} tokens and {params.max_tokens if asked else 1} more were "
                                f"asked for; the model's context is {n_ctx} tokens", "messages",
                           code="context_length_exceeded")
    params.max_tokens = min(params.max_tokens, room)


def parse_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(400, "'prompt' is required and must be a string", "prompt")
    return prompt


class Worker:
    """The engine side of a server: the bounded job queue and the one thread that generates, batching
    jobs that sample alike. An HTTP layer (api.Server) puts jobs in and reads their events."""

    def __init__(self, engine, api_key: str | None = None, queue_size: int = 16, model_id: str | None = None,
                 max_batch: int = 8, batch_wait: float = 0.03):
        self.engine, self.api_key = engine, api_key
        self.model_id = model_id or engine.model_id
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.created = int(time.time())
        self.cancelled = 0                # requests stopped or dropped because their client left (in /health)
        self.batched = 0                  # requests decoded together with others (in /health)
        self.max_batch, self.batch_wait = max_batch, batch_wait
        self.worker = threading.Thread(target=self._work, daemon=True)

    def submit(self, job: Job) -> Job:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise RequestError(503, "the server is busy: request queue is full, retry later",
                               kind="server_busy", code="queue_full") from None
        return job

    def _work(self) -> None:
        if getattr(self.engine, "continuous", False):   # an engine with its own scheduler (vLLM)
            return self._work_continuous()
        # taken from the queue but not batchable with the job at hand; the queue is read again only
        # once these are done, so the queue's bound still bounds what waits
        pending: deque = deque()
        while True:
            if pending:
                job, rest = pending.popleft(), list(pending)
                pending.clear()
                batch = [job]
                for other in rest:
                    fits = self.engine.batches and len(batch) < self.max_batch and _batchable(job, other)
                    (batch if fits else pending).append(other)
            else:
                job = self.jobs.get()
                batch = [job]
                if self.engine.batches and _batchable(job, job):
                    # what is waiting, or arrives within batch_wait, and samples the same way joins this
                    # batch: clients whose answers ended together ask again a few milliseconds apart
                    deadline = time.monotonic() + self.batch_wait
                    while len(batch) < self.max_batch:
                        try:
                            other = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                        except queue.Empty:
                            break
                        (batch if _batchable(job, other) else pending).append(other)
            left = [j for j in batch if j.cancelled.is_set()]
            self.cancelled += len(left)           # their clients left while they waited: never started
            batch = [j for j in batch if not j.cancelled.is_set()] or [job]
            try:
                if len(batch) > 1:
                    self._run_batch(batch)
                else:
                    self._run_one(job)
            finally:
                for j in batch:
                    j.put(None)

    def _run_one(self, job: Job) -> None:
        try:
            if job.cancelled.is_set():        # (counted when the batch was formed)
                return
            if job.kind == "embeddings":
                job.put(self.engine.embed(job.payload))
                return
            stream = self.engine.generate(job.payload, job.params)
            for delta in stream:
                if job.cancelled.is_set():
                    stream.close()            # stops generation early
                    self.cancelled += 1
                    break
                job.put(delta)
        except Exception as exc:               # reported to that request only; the server goes on
            job.put(exc)

    def _run_batch(self, batch: list[Job]) -> None:
        flags = [j.cancelled for j in batch]
        gone = set()
        try:
            for row, delta in self.engine.generate_batch([j.payload for j in batch], [j.params for j in batch], flags):
                batch[row].put(delta)
            gone = {i for i, f in enumerate(flags) if f.is_set()}
        except Exception as exc:
            for j in batch:
                j.put(exc)
        self.cancelled += len(gone)
        self.batched += len(batch)

    def _work_continuous(self) -> None:
        """For an engine with its own scheduler (vLLM): a job joins the running ones at the next step
        instead of waiting for a batch to end, and its tokens go out as each step makes them. The
        queue is read between steps, so its bound still bounds what waits."""
        backend = self.engine.backend
        running: dict[str, tuple[Job, Detokenizer]] = {}
        shared: set[str] = set()
        while True:
            shared &= running.keys()
            block = not running
            while len(running) < self.max_batch:
                try:
                    job = self.jobs.get(block=block)
                except queue.Empty:
                    break
                block = False
                if job.cancelled.is_set():    # its client left while it waited: never started
                    self.cancelled += 1       # (embeddings never get here: the route checks `embeds`)
                    job.put(None)
                    continue
                try:
                    with self.engine.lock:
                        rid = backend.start(job.payload, job.params, job.params.max_tokens)
                except Exception as exc:       # reported to that request only; the server goes on
                    job.put(exc)
                    job.put(None)
                    continue
                running[rid] = (job, Detokenizer(backend.tokenizer, backend.stop_ids, job.params, len(job.payload)))
                if len(running) > 1:       # each request that shared a step with another counts once
                    fresh = running.keys() - shared
                    self.batched += len(fresh)
                    shared.update(fresh)
            gone = [rid for rid, (job, _) in running.items() if job.cancelled.is_set()]
            if gone:
                with self.engine.lock:
                    backend.abort(gone)
                for rid in gone:
                    running.pop(rid)[0].put(None)
                self.cancelled += len(gone)
            if not running:
                continue
            try:
                with self.engine.lock:
                    moved = backend.step()
            except Exception as exc:
                for job, _ in running.values():
                    job.put(exc)
                    job.put(None)
                running.clear()
                continue
            ended = []
            for rid, new, finished in moved:
                if rid not in running:
                    continue
                job, detok = running[rid]
                for t in new:
                    for d in detok.push(t):
                        job.put(d)
                    if detok.done:
                        break
                if detok.done or finished:
                    for d in detok.finish():
                        job.put(d)
                    job.put(None)
                    ended.append(rid)
                    if not finished:       # a stop string, or max_tokens counted here first
                        with self.engine.lock:
                            backend.abort([rid])
            for rid in ended:
                running.pop(rid)

    def start(self) -> None:
        self.worker.start()

def _batchable(a: Job, b: Job) -> bool:
    """Rows of one batch share the sampler: the same temperature and top-p, and no seed of their own."""
    return all(j.kind != "embeddings" and j.params.seed is None for j in (a, b)) and \
        (b.params.temperature, b.params.top_p) == (a.params.temperature, a.params.top_p)


def whole_response(chat: bool, text: str, last: Delta, model_id: str) -> dict:
    """A non-streamed answer in OpenAI's shape (chat.completion or text_completion), its usage from the
    last delta's counts."""
    rid, created = response_ids(chat)
    usage = {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
             "total_tokens": last.prompt_tokens + last.completion_tokens}
    choice = ({"index": 0, "message": {"role": "assistant", "content": text},
               "finish_reason": last.finish_reason or "stop"} if chat else
              {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason or "stop"})
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model_id, "choices": [choice], "usage": usage}


def response_ids(chat: bool) -> tuple[str, int]:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
