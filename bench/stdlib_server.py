"""adept serve's former HTTP layer, kept for bench/serve.py's side-by-side of the two HTTP layers.

Until 2026-12 `adept serve` ran on the standard library's ThreadingHTTPServer (a thread per
connection, keep-alive by hand, server-sent events written to the socket). It now runs on uvicorn
(adeptlm/serve/api.py). This file is that former handler over the same Server core (queue, worker,
batching, parsers), so the bench can measure what the HTTP layer alone costs:

    python bench/stdlib_server.py MODEL --port P      (the same model argument as adept serve)
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adeptlm.backends import Delta  # noqa: E402
from adeptlm.errors import AdeptError  # noqa: E402
from adeptlm.serve.server import (CHAT_PAGE, DRAIN_LIMIT, MAX_BODY, Job, RequestError, Worker,  # noqa: E402
                                  fit_context, parse_embedding_input, parse_messages, parse_params,
                                  parse_prompt, response_ids, whole_response)


class StdlibServer(Worker):
    """The same worker as adeptlm.serve.api.Server, under the former HTTP layer."""

    def __init__(self, engine, host: str, port: int, **worker):
        super().__init__(engine, **worker)
        self.httpd = ThreadingHTTPServer((host, port), handler_class(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def serve_forever(self) -> None:
        self.start()
        self.httpd.serve_forever()


def handler_class(server: Worker):

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
            return server.submit(job)

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
            self._send_json(200, whole_response(chat, text, last, server.model_id))

        def _stream(self, job: Job, chat: bool) -> None:
            rid, created = response_ids(chat)
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


def main() -> None:
    from adeptlm.serve.engine import load_engine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    engine = load_engine(args.model)
    server = StdlibServer(engine, args.host, args.port)
    print(f"stdlib server: serving {server.model_id} ({engine.name}) on http://{args.host}:{server.port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
