"""The HTTP side of `adept serve`: FastAPI routes over the Server's job queue (server.py).

A request is checked, tokenized (in a worker thread of the event loop, so other connections go on)
and queued; its events (text deltas, then an end marker) come back from the generation thread
through Job.put, which wakes the request's coroutine. A client that leaves stops its generation:
a stream is cancelled by Starlette when the connection drops, a whole answer checks the
connection about four times a second while it waits.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..backends import Delta
from ..errors import AdeptError
from .asgi import HttpServer
from .server import (CHAT_PAGE, DRAIN_LIMIT, MAX_BODY, Job, RequestError, Worker, fit_context,
                     parse_embedding_input, parse_messages, parse_params, parse_prompt, response_ids,
                     whole_response)

POLL = 0.25   # seconds between checks that a waiting client is still there


class ClientGone(Exception):
    pass


def _json(status: int, body: dict, close: bool = False) -> Response:
    # ensure_ascii off: Chinese answers travel as UTF-8, not \\u escapes
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return Response(data, status, media_type="application/json", headers={"Connection": "close"} if close else None)


async def read_body(request: Request) -> dict:
    """The request's JSON object; a body over MAX_BODY is 413, with or without a Content-Length (a chunked
    body is read up to the limit)."""
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_BODY:    # h11 has already refused a malformed length
        await _drain(request, 0)
        raise _too_large(f"{int(length)} bytes")
    raw, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            await _drain(request, size)
            raise _too_large(f"more than {MAX_BODY} bytes")
        raw.append(chunk)
    try:
        body = json.loads(b"".join(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


async def _drain(request: Request, read: int) -> None:
    """Read what the client is still sending (up to a bound) so that it sees the answer, not a reset."""
    async for chunk in request.stream():
        read += len(chunk)
        if read >= DRAIN_LIMIT:
            break


def _too_large(size: str) -> RequestError:
    return RequestError(413, f"request body of {size} is over the limit of {MAX_BODY}",
                        code="request_too_large", close=True)


def watch(job: Job) -> asyncio.Event:
    """An asyncio event the generation thread sets (through the loop) whenever it puts an event."""
    loop, ready = asyncio.get_running_loop(), asyncio.Event()
    job.wake = lambda: loop.call_soon_threadsafe(ready.set)
    return ready


async def events(job: Job, ready: asyncio.Event, request: Request | None):
    """The job's deltas as they come; with a request, one whose client has left is cancelled. The
    connection is checked every POLL seconds, not at every token: on a small CPU, work on the event
    loop's thread at each token takes time from the generation thread (bench/RESULTS.md, "Serving's
    HTTP layer on uvicorn")."""
    checked = time.monotonic()
    while True:
        try:
            item = job.events.get_nowait()
        except queue.Empty:
            ready.clear()
            if not job.events.empty():      # put between the get and the clear: its wake-up is lost
                continue
            try:
                await asyncio.wait_for(ready.wait(), POLL)
            except asyncio.TimeoutError:
                pass
            if request is not None and time.monotonic() - checked >= POLL:
                checked = time.monotonic()
                if await request.is_disconnected():
                    job.cancelled.set()      # the worker stops this generation at its next token
                    raise ClientGone
            continue
        if item is None:
            job.finished = True
            return
        if isinstance(item, RequestError):
            raise item
        if isinstance(item, Exception):
            raise RequestError(500, f"generation failed: {item}", kind="server_error")
        yield item


def build_app(server) -> FastAPI:
    engine = server.engine
    app = FastAPI(title="adept serve", version=__version__, redoc_url=None,
                  description="An OpenAI-compatible server over one model (llama.cpp, transformers or vLLM). Bodies "
                              "are OpenAI's: see https://platform.openai.com/docs/api-reference.")

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError):
        return _json(err.status, err.body(), close=err.close)

    @app.exception_handler(HTTPException)
    async def _no_route(request: Request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code in (404, 405) else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _json(exc.status_code, RequestError(exc.status_code, message, kind=kind).body())

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):
        return Response(status_code=499)      # nobody reads it: the connection is closed

    def auth(request: Request) -> None:
        if server.api_key and request.headers.get("authorization", "") != f"Bearer {server.api_key}":
            raise RequestError(401, "invalid or missing API key", kind="authentication_error", code="invalid_api_key")

    @app.get("/", include_in_schema=False)
    @app.get("/chat", include_in_schema=False)
    async def chat_page():
        return HTMLResponse(CHAT_PAGE.read_bytes())

    @app.get("/health", summary="model, backend, template and queue state (no key needed)")
    async def health():
        template = engine.backend.template
        return _json(200, {"status": "ok", "model": server.model_id, "backend": engine.name,
                           "template": f"{template.name}, turns end with {template.eot}"
                           if template else "none (completions only)",
                           "queued": server.jobs.qsize(), "cancelled": server.cancelled, "batched": server.batched})

    @app.get("/v1/models", summary="the one model served")
    async def models(request: Request):
        auth(request)
        return _json(200, {"object": "list", "data": [{"id": server.model_id, "object": "model",
                                                       "created": server.created, "owned_by": "adeptlm"}]})

    @app.post("/v1/chat/completions", summary="chat (OpenAI's body: messages, max_tokens, temperature, top_p, "
                                              "stop, seed, stream)")
    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    @app.post("/v1/completions", summary="plain completion of a prompt (OpenAI's legacy body)")
    async def completions(request: Request):
        return await generate(request, chat=False)

    @app.post("/v1/embeddings", summary="mean-pooled, unit-length embeddings of up to 256 texts")
    async def embeddings(request: Request):
        auth(request)
        if not engine.backend.embeds:
            raise RequestError(400, f"the {engine.name} backend gives no embeddings", "model",
                               code="embeddings_unsupported")
        texts = parse_embedding_input(await read_body(request))
        tokens = sum([await run_in_threadpool(engine.count, t) for t in texts])
        job = Job("embeddings", texts, None)
        ready = watch(job)
        vectors = [v async for v in events(server.submit(job), ready, request)][0]
        return _json(200, {"object": "list", "model": server.model_id,
                           "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def generate(request: Request, chat: bool):
        auth(request)
        body = await read_body(request)
        payload = parse_messages(body) if chat else parse_prompt(body)
        params = parse_params(body, engine.n_ctx)
        try:
            ids = await run_in_threadpool(engine.chat_ids if chat else engine.prompt_ids, payload)
        except AdeptError as exc:
            raise RequestError(400, str(exc), "messages" if chat else "prompt") from None
        asked = body.get("max_completion_tokens", body.get("max_tokens")) is not None
        fit_context(ids, params, asked, engine.n_ctx)
        job = Job("chat" if chat else "completion", ids, params)
        ready = watch(job)
        server.submit(job)
        if body.get("stream"):
            return StreamingResponse(stream(job, ready, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        text, last = "", Delta("")
        async for d in events(job, ready, request):
            text += d.text
            last = d
        return _json(200, whole_response(chat, text, last, server.model_id))

    async def stream(job: Job, ready: asyncio.Event, chat: bool):
        """Server-sent events in OpenAI's chunk shape. Starlette cancels this generator when the client
        drops the connection; the finally clause then stops the generation."""
        rid, created = response_ids(chat)
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice: dict) -> str:
            body = {"id": rid, "object": obj, "created": created, "model": server.model_id, "choices": [choice]}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            try:
                async for d in events(job, ready, None):
                    if d.text:
                        yield chunk({"index": 0, "delta": {"content": d.text}, "finish_reason": None} if chat
                                    else {"index": 0, "text": d.text, "logprobs": None, "finish_reason": None})
                    if d.finish_reason:
                        yield chunk({"index": 0, "delta": {}, "finish_reason": d.finish_reason} if chat else
                                    {"index": 0, "text": "", "logprobs": None, "finish_reason": d.finish_reason})
            except RequestError as err:      # the status line is gone: report in the stream itself
                yield f"data: {json.dumps(err.body())}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not job.finished:
                job.cancelled.set()

    return app


class Server(Worker):
    """`adept serve`: the worker with its HTTP layer, on a socket bound here (port 0: any free one,
    known before serving)."""

    def __init__(self, engine, host: str = "127.0.0.1", port: int = 8000, max_connections: int = 1024,
                 keep_alive: float = 5.0, **worker):
        super().__init__(engine, **worker)
        self.http = HttpServer(build_app(self), host, port, max_connections=max_connections, keep_alive=keep_alive)

    @property
    def port(self) -> int:
        return self.http.port

    def serve_forever(self) -> None:
        self.start()
        self.http.serve_forever()

    def shutdown(self) -> None:
        self.http.shutdown()
