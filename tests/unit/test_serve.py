"""adept serve as a real process on a loopback port, driven by the official openai client; adept chat
through a pseudo-terminal and through a pipe."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, start_server

openai = pytest.importorskip("openai", reason="the openai client is not installed")

KEY = "sk-test-adept"
LOGS: dict = {}          # server base URL -> the file its output goes to


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import build_tiny_model, build_tiny_tokenizer
    from adeptlm.templates import CHATML

    d = tmp_path_factory.mktemp("serve") / "tiny"
    tok = build_tiny_tokenizer(CHATML)
    build_tiny_model("llama", len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    proc, base = start_server([str(d), "--api_key", KEY, "--queue_size", "32"], d.parent / "serve.log", timeout=120)
    LOGS[base] = d.parent / "serve.log"
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def client(base, key=KEY):
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)


def test_chat_stream_completion_models(server):
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6,
                                  temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 0
    # greedy is deterministic: the stream carries the same text
    pieces, finish = [], None
    for chunk in c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=6, temperature=0, stream=True):
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == r.choices[0].message.content and finish == r.choices[0].finish_reason
    comp = c.completions.create(model="tiny", prompt="The quick brown", max_tokens=4, temperature=0)
    assert comp.object == "text_completion"
    # the text is transformers' own greedy continuation of the prompt, with no chat template around it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = LOGS[server].parent / "tiny"
    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok("The quick brown", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id or 0)[0, ids.shape[1]:]
    assert comp.choices[0].text == tok.decode(out, skip_special_tokens=True)
    assert comp.usage.prompt_tokens == ids.shape[1] and comp.usage.completion_tokens == len(out)
    assert [m.id for m in c.models.list().data] == ["tiny"]


def test_wrong_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as err:
        client(server, "sk-wrong").models.list()
    assert err.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").chat.completions.create(model="t", messages=[{"role": "user", "content": "x"}])


def raw_post(base, path, data: bytes, key=KEY):
    req = urllib.request.Request(base + path, data=data, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (json.dumps({"model": "t"}).encode(), "messages"),
    (json.dumps({"model": "t", "messages": "hello"}).encode(), "messages"),
    (json.dumps({"model": "t", "messages": [{"role": "user", "content": 5}]}).encode(), "messages[0].content"),
    (json.dumps({"model": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}).encode(),
     "max_tokens"),
    (json.dumps({"model": "t", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10 ** 7}).encode(),
     "max_tokens"),
    (json.dumps({"model": "t", "messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode(),
     "temperature"),
])
def test_malformed_requests_are_4xx_in_openai_shape(server, body, param):
    status, payload = raw_post(server, "/v1/chat/completions", body)
    assert 400 <= status < 500, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["param"] == param


def test_over_long_max_tokens_through_the_client(server):
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model="t", messages=[{"role": "user", "content": "x"}],
                                               max_tokens=10 ** 6)
    assert "context" in str(err.value)


def test_200_requests_at_concurrency_8(server):
    """Every client gets its own answer: 200 greedy requests, 8 at a time (decoded together in batches),
    each equal to what its prompt gets when asked alone."""
    c = client(server)

    def one(i):
        k = i % 16
        if k % 2:
            return c.chat.completions.create(model="t", messages=[{"role": "user", "content": f"n {k}"}],
                                             max_tokens=3, temperature=0).choices[0].message.content
        return c.completions.create(model="t", prompt=f"count {k}", max_tokens=3, temperature=0).choices[0].text

    alone = [one(k) for k in range(16)]
    assert len(set(alone)) > 1    # the prompts do get different answers, so a mix-up would show
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [alone[i % 16] for i in range(200)]
    assert urllib.request.urlopen(server + "/health", timeout=5).status == 200
    assert client(server).models.list().data


def _read_until(fd, marker: bytes, timeout: float = 120) -> bytes:
    buf, deadline = b"", time.time() + timeout
    while marker not in buf:
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {marker!r}; got {buf[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_chat_in_a_pseudo_terminal(tiny_model_dir):
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "adeptlm", "chat", str(tiny_model_dir), "--max_tokens", "5",
                                  "--temperature", "0"])
    try:
        _read_until(fd, b"you> ")
        os.write(fd, b"hello there\n")
        first = _read_until(fd, b"you> ")
        assert b"model> " in first
        os.write(fd, b"what is two plus two\n")
        _read_until(fd, b"you> ")
        os.write(fd, b"/reset\n")
        assert b"conversation reset" in _read_until(fd, b"you> ")
        os.write(fd, b"hello there\n")
        again = _read_until(fd, b"you> ")
        # after /reset the same first question gets the same greedy answer as the first turn
        answer = lambda out: out.split(b"model> ", 1)[1].split(b"\r\n")[0]   # noqa: E731
        assert answer(again) == answer(first)
        os.write(fd, b"/exit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_chat_with_piped_stdin_answers_each_line(tiny_model_dir):
    res = subprocess.run([sys.executable, "-m", "adeptlm", "chat", str(tiny_model_dir), "--max_tokens", "4",
                          "--temperature", "0"], input="hello\nsecond question\n/reset\nthird\n",
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "(conversation reset)" in lines and len(lines) == 4, lines


def test_usage_counts_are_the_rendered_prompts_tokens(server, tiny_tokenizer):
    from adeptlm.templates import encode_prompt, get_template

    messages = [{"role": "user", "content": "hello there"}]
    r = client(server).chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0)
    assert r.usage.prompt_tokens == len(encode_prompt(tiny_tokenizer, get_template(tiny_tokenizer), messages))
    assert 1 <= r.usage.completion_tokens <= 5
    comp = client(server).completions.create(model="tiny", prompt="The quick brown", max_tokens=3, temperature=0)
    assert comp.usage.prompt_tokens == len(tiny_tokenizer("The quick brown")["input_ids"])


def test_embeddings_are_unit_vectors_equal_for_equal_texts(server, tiny_tokenizer):
    import math

    r = client(server).embeddings.create(model="tiny", input=["the quick brown fox", "hello", "the quick brown fox"])
    vecs = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and len({len(v) for v in vecs}) == 1 and len(vecs[0]) == 32
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in vecs)
    assert max(abs(a - b) for a, b in zip(vecs[0], vecs[2])) < 1e-6 and vecs[0] != vecs[1]
    want = sum(len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"])
               for t in ["the quick brown fox", "hello", "the quick brown fox"])
    assert r.usage.prompt_tokens == want
    status, payload = raw_post(server, "/v1/embeddings", json.dumps({"model": "t", "input": []}).encode())
    assert status == 400 and payload["error"]["param"] == "input"


def test_over_long_prompt_is_400_context_length_exceeded(server):
    long = "the quick brown fox " * 200          # the tiny model's context is 256 tokens
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model="t", messages=[{"role": "user", "content": long}])
    assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client(server).completions.create(model="t", prompt=long, stream=True)
    assert err.value.code == "context_length_exceeded"
    # a prompt that fits, with no max_tokens, is cut to the room left rather than refused
    r = client(server).completions.create(model="t", prompt="the quick brown fox " * 40, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_a_body_over_the_limit_is_413(server):
    big = json.dumps({"model": "t", "messages": [{"role": "user", "content": "x" * (5 * 2 ** 20)}]}).encode()
    status, payload = raw_post(server, "/v1/chat/completions", big)
    assert status == 413 and payload["error"]["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as err:                 # the official client sees it too
        client(server).chat.completions.create(model="t", messages=[{"role": "user", "content": "x" * (5 * 2 ** 20)}])
    assert err.value.status_code == 413
    assert urllib.request.urlopen(server + "/health", timeout=5).status == 200


def slow_backend(tokenizer):
    """A backend that writes one token every 20 ms until stopped: long enough to leave mid-way."""
    from adeptlm.backends import Backend

    class Slow(Backend):
        name, model_id, n_ctx = "slow", "slow", 100000

        def _tokens(self, ids, params):
            t = tokenizer("a", add_special_tokens=False)["input_ids"][0]
            while True:
                time.sleep(0.02)
                yield t

    backend = Slow()
    backend.tokenizer = tokenizer
    return backend


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_the_worker(tiny_tokenizer, stream):
    import threading

    from adeptlm.serve.engine import Engine
    from adeptlm.serve.api import Server

    srv = Server(Engine(slow_backend(tiny_tokenizer)), port=0, api_key=KEY)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.port}"
    ask = dict(model="s", messages=[{"role": "user", "content": "go"}], max_tokens=5000)
    try:
        if stream:                             # read a few chunks, then hang up
            r = client(base).chat.completions.create(stream=True, **ask)
            for i, _ in enumerate(r):
                if i == 3:
                    break
            r.close()
        else:                                  # give up waiting for the whole answer
            impatient = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=0.5)
            with pytest.raises(openai.APITimeoutError):
                impatient.chat.completions.create(**ask)
        deadline = time.time() + 10
        while srv.cancelled < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert srv.cancelled == 1             # 5000 tokens would take 100 s: it was stopped, not finished
        r = client(base).chat.completions.create(**{**ask, "max_tokens": 3})
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    finally:
        srv.shutdown()


def test_chat_page_sends_a_message_and_shows_the_streamed_answer(server, browser_page):
    """The page at / (self-contained: no script or style from elsewhere), in headless Chromium: a typed
    message is sent, the answer streams into the page to its end, and a second turn keeps the first."""
    page_text = urllib.request.urlopen(server + "/", timeout=10).read().decode("utf-8")
    assert "<script>" in page_text and "src=" not in page_text and "https://" not in page_text
    page = browser_page
    page.goto(f"{server}/#key={KEY}")
    page.wait_for_function("document.getElementById('model').textContent.includes('transformers')")
    assert page.inner_text("#model") == "tiny (transformers; template tokenizer, turns end with <|im_end|>)"
    page.fill("#max_tokens", "8")        # two turns stay inside the tiny model's 256-token context
    for n, text in enumerate(("hello", "and again"), 1):
        page.fill("#input", text)
        page.click("#send")
        page.wait_for_selector(f".turn.assistant:nth-of-type({2 * n})[data-finish]", timeout=60000)
    turns = page.query_selector_all(".turn")
    assert [t.get_attribute("class") for t in turns] == ["turn user", "turn assistant"] * 2
    assert [turns[0].inner_text(), turns[2].inner_text()] == ["hello", "and again"]


def test_waiting_requests_that_sample_alike_are_decoded_together():
    """The worker takes what is queued: requests with the same temperature and top-p and no seed go in one
    batch (at most max_batch); a seeded or differently sampled one waits and runs on its own."""
    import threading

    from adeptlm.backends import Delta, GenParams
    from adeptlm.serve.server import Job, Worker

    runs = []

    class Recorder:
        name, model_id, n_ctx, batches = "rec", "rec", 1000, True

        def generate(self, ids, p):
            runs.append([ids[0]])
            yield Delta("", "stop", 1, 1)

        def generate_batch(self, prompts, params, flags):
            runs.append([p[0] for p in prompts])
            for row in range(len(prompts)):
                yield row, Delta("", "stop", 1, 1)

    srv = Worker(Recorder(), max_batch=3)
    plain, hot, seeded = GenParams(), GenParams(temperature=1.3), GenParams(seed=1)
    jobs = [Job("chat", [k], p) for k, p in enumerate([plain, plain, seeded, hot, plain, plain, hot])]
    for j in jobs:
        srv.jobs.put_nowait(j)
    threading.Thread(target=srv._work, daemon=True).start()
    for j in jobs:
        while j.events.get(timeout=10) is not None:
            pass
    # 0, 1, 4 together (the batch is full); 2 and 3, set aside meanwhile, run before the queue is read
    # again (so the queue's bound still holds); then 5, which finds only 6, sampled otherwise
    assert runs == [[0, 1, 4], [2], [3], [5], [6]]
    assert srv.batched == 3


def test_unknown_routes_and_methods_are_openai_shaped(server):
    status, payload = raw_post(server, "/v1/nothing", b"{}")
    assert status == 404 and payload["error"]["type"] == "not_found_error"
    status, payload = raw_post(server, "/health", b"{}")
    assert status == 405 and payload["error"]["message"] == "no route POST /health"


def test_openapi_page_lists_the_routes(server):
    spec = json.loads(urllib.request.urlopen(server + "/openapi.json", timeout=10).read())
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health"} <= set(spec["paths"])
    page = urllib.request.urlopen(server + "/docs", timeout=10).read().decode()
    assert "/openapi.json" in page


def test_keep_alive_answers_several_requests_on_one_connection(server):
    import http.client

    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"model": "t", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    sockets = set()
    for _ in range(3):
        conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}",
                                                             "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["usage"]["completion_tokens"] <= 2
        sockets.add(id(conn.sock))
    assert len(sockets) == 1                 # the same connection served all three
    conn.close()


def test_300_idle_connections_do_not_stop_a_request(server):
    """Clients that connect and send nothing, or half a request line, hold a connection each; with 300 of
    them open a normal request is still answered at once (asyncio holds them, no thread per client)."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    idle = []
    try:
        for k in range(300):
            s = socket.create_connection((host, int(port)), timeout=10)
            if k % 2:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")     # headers never finished
            idle.append(s)
        t = time.monotonic()
        assert urllib.request.urlopen(server + "/health", timeout=1).status == 200
        r = client(server).chat.completions.create(model="t", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=2, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
        assert time.monotonic() - t < 1.0, "a request waited behind idle connections"
    finally:
        for s in idle:
            s.close()


def test_connection_limit_and_idle_timeout(tiny_tokenizer):
    """--max_connections: a request beyond the limit is answered 503 at once; --keep_alive: an idle
    connection is closed that many seconds after its last answer."""
    import http.client
    import socket
    import threading

    from adeptlm.serve.engine import Engine
    from adeptlm.serve.api import Server

    srv = Server(Engine(slow_backend(tiny_tokenizer)), port=0, max_connections=3, keep_alive=0.5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().read() and conn.sock is not None
        time.sleep(1.5)
        assert conn.sock.recv(1) == b""       # closed by the server after 0.5 s idle
        held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
        time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v1/models", timeout=10)
        assert err.value.code == 503
        for s in held:
            s.close()
        time.sleep(0.2)
        assert urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v1/models", timeout=10).status == 200
    finally:
        srv.shutdown()


def test_serve_backend_vllm_without_vllm_is_one_line(tmp_path, tiny_model_dir):
    """`adept serve DIR --backend vllm` where vLLM is not installed: one line naming its environment,
    exit status 2, before anything binds a port. (tests/vllm_engine/ serves on the real vLLM.)"""
    import importlib.util

    from conftest import run_adept

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: tests/vllm_engine/ runs it for real")
    rc = run_adept("serve", str(tiny_model_dir), "--backend", "vllm", "--port", "0")
    assert rc.returncode == 2 and rc.stderr.strip().count("\n") == 0, rc.stderr[-2000:]
    assert "make vllm" in rc.stderr and "serving" not in rc.stdout


def test_deep_json_and_chunked_bodies(server):
    """A body nested 100,000 levels deep is a 400, not a dropped connection; a chunked body (no
    Content-Length) is read like any other, and one over the limit is a 413."""
    import http.client

    status, payload = raw_post(server, "/v1/chat/completions", b"[" * 100000 + b"]" * 100000)
    assert status == 400 and "nested too deeply" in payload["error"]["message"]
    host, port = server.removeprefix("http://").split(":")

    def chunked(body: bytes):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/v1/chat/completions", body=iter([body[:7], body[7:]]), encode_chunked=True,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    status, payload = chunked(json.dumps({"model": "t", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 2}).encode())
    assert status == 200 and payload["usage"]["completion_tokens"] <= 2
    status, payload = chunked(json.dumps({"model": "t", "messages": [{"role": "user", "content": "x" * (5 * 2 ** 20)}]}).encode())
    assert status == 413 and payload["error"]["code"] == "request_too_large"


def test_clients_that_leave_leave_no_traceback_in_the_log(server):
    """300 clients that connect and leave: before sending anything, halfway through their headers, after
    a request they do not wait for (a chat, a wrong key). The server answers the next request and its
    log holds no traceback."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    chat = json.dumps({"model": "t", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}).encode()
    requests = [b"",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(chat)).encode() + b"\r\n\r\n" + chat,
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n"]
    for k in range(300):
        s = socket.create_connection((host, int(port)), timeout=10)
        if requests[k % 4]:
            s.sendall(requests[k % 4])
        s.close()
    time.sleep(1.0)
    r = client(server).chat.completions.create(model="t", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")
    log = LOGS[server].read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
