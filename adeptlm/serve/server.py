"""`adept serve`: an OpenAI-compatible HTTP server over one model.

Endpoints: POST /v1/chat/completions and /v1/completions (streamed as server-sent events when
"stream": true), POST /v1/embeddings, GET /v1/models and /health, and a chat page at / (chat.html).
Prompts are tokenized on the request's own thread, so a prompt longer than the context is refused
(400, context_length_exceeded) before it is queued, and usage counts are the rendered prompt's
tokens. Connections are handled on threads, generation on one worker thread that takes jobs from a
bounded queue: a full queue answers 503 at once instead of letting clients hang; jobs waiting
together are decoded in one batch (transformers) or as parallel sequences (llama.cpp). Errors are
JSON in OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with a 4xx status for
anything the request got wrong. Built
on the standard library's HTTP server (measured against llama-cpp-python's FastAPI + uvicorn server
in bench/serve.py: more tokens/s on the same GGUF).
"""

from __future__ import annotations

import json
import queue
from collections import deque
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..backends import Delta, GenParams
from ..errors import AdeptError

MAX_BODY = 4 * 2 ** 20
DRAIN_LIMIT = 64 * 2 ** 20   # an over-large body is read and dropped up to this size, so the 413 reaches the client
MAX_EMBED_INPUTS = 256
CHAT_PAGE = Path(__file__).with_name("chat.html")   # self-contained: no script or style from elsewhere


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Job:
    kind: str                      # "chat", "completion" or "embeddings"
    payload: object                # prompt ids, or the texts to embed
    params: GenParams | None
    events: "queue.Queue" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


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


class Server:
    def __init__(self, engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 queue_size: int = 16, model_id: str | None = None, max_batch: int = 8,
                 batch_wait: float = 0.03):
        self.engine, self.api_key = engine, api_key
        self.model_id = model_id or engine.model_id
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.created = int(time.time())
        self.cancelled = 0                # generations stopped because their client left (in /health)
        self.batched = 0                  # requests decoded together with others (in /health)
        self.max_batch, self.batch_wait = max_batch, batch_wait
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self.worker = threading.Thread(target=self._work, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def _work(self) -> None:
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
            batch = [j for j in batch if not j.cancelled.is_set()] or [job]
            try:
                if len(batch) > 1:
                    self._run_batch(batch)
                else:
                    self._run_one(job)
            finally:
                for j in batch:
                    j.events.put(None)

    def _run_one(self, job: Job) -> None:
        try:
            if job.cancelled.is_set():
                return
            if job.kind == "embeddings":
                job.events.put(self.engine.embed(job.payload))
                return
            stream = self.engine.generate(job.payload, job.params)
            for delta in stream:
                if job.cancelled.is_set():
                    stream.close()            # stops generation early
                    self.cancelled += 1
                    break
                job.events.put(delta)
        except Exception as exc:               # reported to that request only; the server goes on
            job.events.put(exc)

    def _run_batch(self, batch: list[Job]) -> None:
        flags = [j.cancelled for j in batch]
        gone = set()
        try:
            for row, delta in self.engine.generate_batch([j.payload for j in batch], [j.params for j in batch], flags):
                batch[row].events.put(delta)
            gone = {i for i, f in enumerate(flags) if f.is_set()}
        except Exception as exc:
            for j in batch:
                j.events.put(exc)
        self.cancelled += len(gone)
        self.batched += len(batch)

    def serve_forever(self) -> None:
        self.worker.start()
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):   # one quiet line per request instead of stderr noise
                pass

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_json(self, status: int, body: dict) -> None:
                self._send(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json")

            def _auth(self) -> None:
                if server.api_key and self.headers.get("Authorization", "") != f"Bearer {server.api_key}":
                    raise RequestError(401, "invalid or missing API key", kind="authentication_error",
                                       code="invalid_api_key")

            def do_GET(self):
                try:
                    if self.path.split("?")[0] in ("/", "/chat"):
                        return self._send(200, CHAT_PAGE.read_bytes(), "text/html; charset=utf-8")
                    if self.path == "/health":
                        template = server.engine.backend.template
                        return self._send_json(200, {"status": "ok", "model": server.model_id,
                                                     "backend": server.engine.name,
                                                     "template": f"{template.name}, turns end with {template.eot}"
                                                     if template else "none (completions only)",
                                                     "queued": server.jobs.qsize(), "cancelled": server.cancelled,
                                                     "batched": server.batched})
                    self._auth()
                    if self.path == "/v1/models":
                        return self._send_json(200, {"object": "list", "data": [
                            {"id": server.model_id, "object": "model", "created": server.created,
                             "owned_by": "adeptlm"}]})
                    raise RequestError(404, f"no route GET {self.path}", kind="not_found_error")
                except RequestError as err:
                    self._send_json(err.status, err.body())

            def do_POST(self):
                try:
                    self._auth()
                    if self.path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
                        raise RequestError(404, f"no route POST {self.path}", kind="not_found_error")
                    body = self._read_body()
                    if self.path == "/v1/embeddings":
                        return self._embeddings(body)
                    chat = self.path == "/v1/chat/completions"
                    payload = parse_messages(body) if chat else parse_prompt(body)
                    params = parse_params(body, server.engine.n_ctx)
                    try:
                        ids = server.engine.chat_ids(payload) if chat else server.engine.prompt_ids(payload)
                    except AdeptError as exc:
                        raise RequestError(400, str(exc), "messages" if chat else "prompt") from None
                    asked = body.get("max_completion_tokens", body.get("max_tokens")) is not None
                    fit_context(ids, params, asked, server.engine.n_ctx)
                    job = self._queue(Job("chat" if chat else "completion", ids, params))
                    if body.get("stream"):
                        self._stream(job, chat)
                    else:
                        self._whole(job, chat)
                except RequestError as err:
                    self._send_json(err.status, err.body())
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True   # the client left; its generation was cancelled

            def _queue(self, job: Job) -> Job:
                try:
                    server.jobs.put_nowait(job)
                except queue.Full:
                    raise RequestError(503, "the server is busy: request queue is full, retry later",
                                       kind="server_busy", code="queue_full") from None
                return job

            def _embeddings(self, body: dict) -> None:
                texts = parse_embedding_input(body)
                tokens = sum(server.engine.count(t) for t in texts)
                job = self._queue(Job("embeddings", texts, None))
                vectors = list(self._events(job))[0]   # one item (the vectors), then the end marker
                self._send_json(200, {"object": "list", "model": server.model_id,
                                      "data": [{"object": "embedding", "index": i, "embedding": v}
                                               for i, v in enumerate(vectors)],
                                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

            def _read_body(self) -> dict:
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise RequestError(411, "Content-Length is required") from None
                if length > MAX_BODY:
                    # read what the client is sending (up to a bound) so it sees the answer, not a reset
                    left = min(length, DRAIN_LIMIT)
                    while left > 0:
                        chunk = self.rfile.read(min(left, 2 ** 16))
                        if not chunk:
                            break
                        left -= len(chunk)
                    self.close_connection = True
                    raise RequestError(413, f"request body of {length} bytes is over the limit of {MAX_BODY}",
                                       code="request_too_large")
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise RequestError(400, f"request body is not valid JSON: {exc}") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object")
                return body

            def _client_gone(self) -> bool:
                """The client closed its connection (readable with nothing to read); requests here carry
                no body after the one already read, so any readable socket with no bytes is a close."""
                import select
                import socket

                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _events(self, job: Job):
                checked = time.monotonic()
                while True:
                    try:
                        item = job.events.get(timeout=0.25)
                    except queue.Empty:
                        item = queue.Empty
                    if time.monotonic() - checked > 0.25:   # about four times a second, busy or not
                        checked = time.monotonic()
                        if self._client_gone():
                            job.cancelled.set()   # the worker stops this generation at its next token
                            raise ConnectionResetError("client left")
                    if item is queue.Empty:
                        continue
                    if item is None:
                        return
                    if isinstance(item, Exception):
                        raise RequestError(500, f"generation failed: {item}", kind="server_error")
                    yield item

            def _whole(self, job: Job, chat: bool) -> None:
                text, last = "", Delta("")
                for d in self._events(job):
                    text += d.text
                    last = d
                rid, created = _ids(chat)
                usage = {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
                         "total_tokens": last.prompt_tokens + last.completion_tokens}
                choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                           "finish_reason": last.finish_reason or "stop"} if chat else
                          {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason or "stop"})
                self._send_json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                                      "created": created, "model": server.model_id, "choices": [choice],
                                      "usage": usage})

            def _stream(self, job: Job, chat: bool) -> None:
                rid, created = _ids(chat)
                obj = "chat.completion.chunk" if chat else "text_completion"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def send(choice: dict) -> None:
                    chunk = {"id": rid, "object": obj, "created": created, "model": server.model_id,
                             "choices": [choice]}
                    self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode("utf-8"))
                    self.wfile.flush()

                try:
                    if chat:
                        send({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
                    try:
                        for d in self._events(job):
                            if d.text:
                                send({"index": 0, "delta": {"content": d.text}, "finish_reason": None} if chat
                                     else {"index": 0, "text": d.text, "logprobs": None, "finish_reason": None})
                            if d.finish_reason:
                                send({"index": 0, "delta": {}, "finish_reason": d.finish_reason} if chat else
                                     {"index": 0, "text": "", "logprobs": None, "finish_reason": d.finish_reason})
                    except RequestError as err:      # headers are gone: report in the stream itself
                        self.wfile.write(f"data: {json.dumps(err.body())}\n\n".encode("utf-8"))
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    job.cancelled.set()      # the client left: stop generating for it

        return Handler


def _batchable(a: Job, b: Job) -> bool:
    """Rows of one batch share the sampler: the same temperature and top-p, and no seed of their own."""
    return all(j.kind != "embeddings" and j.params.seed is None for j in (a, b)) and \
        (b.params.temperature, b.params.top_p) == (a.params.temperature, a.params.top_p)


def _ids(chat: bool) -> tuple[str, int]:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
