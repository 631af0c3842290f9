"""Shared fixtures: tiny tokenizers and models built from a config (no downloads), and paths to
the real public data samples in ../shared/data (tests skip with a reason when it is absent)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# tests/vllm_engine/ runs the real vLLM from its own environment (`make test-vllm`, which `make test` runs
# after this suite); vLLM pins an older transformers, so the main environment does not have it.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm_engine"]

# Under CI=true a skipped test fails the run unless its node id contains one of these (each with
# the reason it may skip there); every other test must run in CI.
CI_ALLOWED_SKIPS: dict[str, str] = {
    "test_dropout.py::test_adept_asks_torch_for_huge_pages_unless_told_not_to":
        "provable only where the kernel's transparent huge pages are in madvise mode, a host setting",
}


def unexpected_skips(reports, allowed=None) -> list[str]:
    """The node ids of skipped tests that the allow-list does not name."""
    allowed = CI_ALLOWED_SKIPS if allowed is None else allowed
    return [r.nodeid for r in reports if not any(key in r.nodeid for key in allowed)]


def pytest_sessionfinish(session, exitstatus):
    """In CI a skip is a test that did not run: fail the session unless it is allowed by name."""
    if os.environ.get("CI", "").lower() != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else []) if hasattr(r, "nodeid")]
    bad = unexpected_skips(skipped)
    if bad:
        print(f"\nCI: {len(bad)} test(s) skipped that must run in CI (tests/conftest.py CI_ALLOWED_SKIPS):", flush=True)
        for nodeid in bad:
            print(f"  {nodeid}", flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Hello world, hello there!",
    "What is two plus two? Two plus two is four.", "You are a helpful assistant.",
    "system user assistant instruction input output response", "你好，世界。这是一个测试。",
    "0123456789 + - * / = ( ) [ ] { } : ; , . ! ?",
]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they live outside the repository)")
    return SHARED_DATA


def build_tiny_tokenizer(chat_template: str | None = None, split: str | None = None):
    """A byte-level BPE tokenizer trained on a few sentences, with chatml and Llama-3 special tokens.
    split "llama-bpe" or "qwen2": the regex split of Llama-3's or Qwen2's tokenizer.json before the byte
    mapping (otherwise GPT-2's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from adeptlm.export.gguf import LLAMA3_SPLIT, QWEN2_SPLIT

    tk = Tokenizer(models.BPE())
    if split:
        regex = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}[split]
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|begin_of_text|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    if chat_template:
        tok.chat_template = chat_template
    return tok


SPM_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
SPM_CORPUS = CORPUS + ["北京是中华人民共和国的首都。", "大型语言模型在考试上的表现如何？", "  two  spaces and\ttabs\n\nnewlines",
                       "def add(a, b):\n    return a + b"]


def build_spm_tokenizer(dummy_prefix: bool, chat_template: str | None = None):
    """A SentencePiece-style BPE tokenizer (byte fallback, "▁" for a space) trained on a few sentences:
    with dummy_prefix, Llama-2's ("▁" before the text); without, Gemma's. Byte tokens <0x00>..<0xFF>
    are ordinary vocabulary entries, as in those models' tokenizer.json."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    norm = [normalizers.Replace(" ", "\u2581")]
    if dummy_prefix:
        norm.insert(0, normalizers.Prepend("\u2581"))
    trainer_tk = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tk.normalizer = normalizers.Sequence(norm)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPM_SPECIALS, show_progress=False)
    trainer_tk.train_from_iterator(SPM_CORPUS * 5, trainer)
    trained = json.loads(trainer_tk.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for t in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence(norm)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tk.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if dummy_prefix else []))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                  pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    if chat_template:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from adeptlm.templates import CHATML

    return build_tiny_tokenizer(CHATML)


def build_tiny_model(arch: str, vocab_size: int, seed: int = 0, sliding_window: int = 64, hidden_size: int = 32):
    """A 2-layer random model of a real architecture (llama, qwen2, gemma3), small enough for unit tests
    (hidden_size 256 gives rows wide enough for llama.cpp's 256-wide k-quant blocks)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=True, initializer_range=0.2 * (32 / hidden_size) ** 0.5)
    if arch == "gemma3":
        cfg = AutoConfig.for_model("gemma3_text", head_dim=8, query_pre_attn_scalar=8,
                                  sliding_window=sliding_window, **common)
    else:
        cfg = AutoConfig.for_model(arch, **common)
    return AutoModelForCausalLM.from_config(cfg)


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_tokenizer):
    model = build_tiny_model("llama", len(tiny_tokenizer))
    out = tmp_path / "tiny-llama"
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def check_select_exam(root, summary, facts, training: str, val, end: str, join: str) -> None:
    """A bundled subject's selection exam: every fact once more (the answer is the fact), in a wording
    used by neither the training text nor the reported exam (val), with its own options."""
    from adeptlm.data.exams import read_exam

    select = [q for s in read_exam(root / "select_exam").subjects.values() for q in s["val"]]
    assert len(select) == summary["select_val"] == 64
    reported = join.join(q.question for q in val)
    for q in select:
        stem = q.question.rstrip(end)
        for island in facts:
            stem = stem.replace(island, "")
        assert stem.strip() and stem.strip() not in training and stem.strip() not in reported, q.question
    assert {q.choices["ABCD".index(q.answer)] for q in select} == {v for f in facts.values() for v in f.values()}
    assert [q.choices for q in select] != [q.choices for q in val]     # options drawn apart


def trained_runs(enc) -> list[list[int]]:
    """The runs of consecutive trained token ids of an encoded conversation, in order."""
    from adeptlm.templates import IGNORE_INDEX

    runs, run = [], []
    for t, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            run.append(t)
        elif run:
            runs.append(run)
            run = []
    return runs + ([run] if run else [])


def run_adept(*args: str, env: dict | None = None, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    """Run the real `adept` command line in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "adeptlm", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)


def start_server(args: list[str], log: Path, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`adept serve ARGS --port 0` as a process: the port it bound is read from its start line (no free-port
    probe that another process could take first), then /health is awaited. Output goes to a file, so a
    chatty server never blocks on a full pipe."""
    import re
    import time
    import urllib.request

    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "adeptlm", "serve", *args, "--port", "0"], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, text=True)
    deadline, base = time.time() + timeout, None
    while time.time() < deadline:
        if base is None:
            m = re.search(r"on (http://[0-9.]+:\d+)/v1", log.read_text(errors="replace"))
            base = m.group(1) if m else None
        if base is not None:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                return proc, base
            except OSError:
                pass
        if proc.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"adept serve did not start in {timeout} s: {log.read_text(errors='replace')[-3000:]}")


def find_chromium() -> str | None:
    """Chromium for the page tests; installed from Debian's packages when missing and run as root (CI)."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, capture_output=True, timeout=900)
    return shutil.which("chromium")


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    """A page in headless Chromium driven by Playwright (the machine's Chromium, not a download)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    if not chromium:
        pytest.skip("Chromium is not installed and could not be installed (apt-get as root)")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        except sync_api.Error as exc:      # a Chromium this Playwright cannot drive: an environment gap
            pytest.skip(f"Playwright could not start {chromium}: {str(exc).splitlines()[0]}")
        try:
            yield browser.new_page()
        finally:
            browser.close()


LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py: $ADEPT_LLAMA_CPP_CONVERTER, the copy bench/export.py unpacked,
    or the llama-cpp-python source distribution fetched from PyPI once into ~/.cache/adeptlm (76 MB)."""
    import glob
    import tarfile

    pattern = "llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"
    given = os.environ.get("ADEPT_LLAMA_CPP_CONVERTER")
    if given:
        return Path(given)
    cache = Path.home() / ".cache" / "adeptlm" / "llama-cpp-sdist"
    for where in (ROOT / "bench" / "out" / "export", cache):
        found = sorted(glob.glob(str(where / pattern)))
        if found:
            return Path(found[-1])
    pytest.importorskip("sentencepiece", reason="llama.cpp's converter imports sentencepiece")
    cache.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run([sys.executable, "-m", "pip", "download", LLAMA_CPP_SDIST, "--no-deps", "--no-binary",
                         ":all:", "-d", str(cache), "-q"], capture_output=True, text=True)
    archives = sorted(cache.glob("llama_cpp_python-*.tar.gz"))
    if rc.returncode != 0 or not archives:
        pytest.skip(f"could not fetch {LLAMA_CPP_SDIST}'s source from PyPI: {rc.stderr.strip()[-200:]}")
    with tarfile.open(archives[-1]) as tf:
        members = [m for m in tf.getmembers() if "/vendor/llama.cpp/" in m.name and
                   any(k in m.name for k in ("convert_hf_to_gguf.py", "/gguf-py/", "/conversion/"))]
        tf.extractall(cache, members=members, filter="data")
    archives[-1].unlink()
    return Path(sorted(glob.glob(str(cache / pattern)))[-1])
