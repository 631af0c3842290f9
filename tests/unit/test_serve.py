"""adept serve as a real process on a loopback port, driven by the official openai client; adept chat
through a pseudo-terminal and through a pipe."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT

openai = pytest.importorskip("openai", reason="the openai client is not installed")

KEY = "sk-test-adept"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import build_tiny_model, build_tiny_tokenizer
    from adeptlm.templates import CHATML

    d = tmp_path_factory.mktemp("serve") / "tiny"
    tok = build_tiny_tokenizer(CHATML)
    build_tiny_model("llama", len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "adeptlm", "serve", str(d), "--port", str(port), "--api_key", KEY,
                             "--queue_size", "32"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            time.sleep(0.3)
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
    assert comp.object == "text_completion" and isinstance(comp.choices[0].text, str)
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
    c = client(server)

    def one(i):
        if i % 2:
            return c.chat.completions.create(model="t", messages=[{"role": "user", "content": f"n {i}"}],
                                             max_tokens=3, temperature=0.5, seed=i).choices[0].finish_reason
        return c.completions.create(model="t", prompt=f"count {i}", max_tokens=3).choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert len(results) == 200 and all(r in ("stop", "length") for r in results)
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
