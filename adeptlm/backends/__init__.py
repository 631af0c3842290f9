"""Model backends behind one interface (base.Backend): transformers, llama.cpp and vLLM.

Scoring (`last_logits`, `continuation_logprobs`) serves the exams, perplexity and export check;
`generate` greedy batches of ids; `stream` sampled text for chat and serve; `chat_prompt`,
`stop_ids`, `encode` and `count` are the one way prompts become ids. vLLM returns no full logits,
so it has no scoring methods.
"""

from .base import Backend, Delta, Detokenizer, GenParams, ScoreRequest, stop_ids, text_deltas
from .hf import HFBackend, plan_batches
from .llamacpp import LlamaCppBackend
from .vllm import VLLMBackend


KINDS = {"transformers": HFBackend, "llama.cpp": LlamaCppBackend, "vllm": VLLMBackend}


def load_backend(spec: str | None, backend: str = "auto", batch_size: int = 8, n_ctx: int = 4096,
                 dtype: str = "float32", tokenizer: str | None = None, mode: str | None = None) -> Backend:
    """The one place a model spec becomes a backend. auto: llama.cpp for a .gguf file (its tokenizer
    read from the file, or from `tokenizer`) when llama-cpp-python is installed, transformers for
    anything else adept accepts (a known name, a HF directory, a LoRA adapter applied unmerged, or a
    .gguf without llama.cpp). `mode`, an exam formulation, is checked against the backend's
    capabilities before anything is loaded."""
    import importlib.util
    from pathlib import Path

    from ..errors import AdeptError

    is_gguf = str(spec or "").endswith(".gguf")
    if is_gguf and not Path(spec).expanduser().is_file():
        raise AdeptError(f"{Path(spec).expanduser()}: no such GGUF file")
    kind = backend
    if kind == "auto":
        kind = "llama.cpp" if is_gguf and importlib.util.find_spec("llama_cpp") else "transformers"
    if kind not in KINDS:
        raise AdeptError(f"unknown --backend {backend}: expected auto, {', '.join(KINDS)}")
    cls = KINDS[kind]
    if kind == "llama.cpp" and not is_gguf:
        raise AdeptError(f"--backend llama.cpp needs a .gguf model, not {spec}")
    if kind == "vllm" and is_gguf:
        raise AdeptError("--backend vllm runs on a HF model directory, not a .gguf file")
    if mode not in (None, "generate") and not cls.scores:   # letter, cloze and both score every option
        raise AdeptError(f"--mode {mode} needs every next-token logit, which the {kind} backend does not give: "
                         "use --mode generate, or the transformers backend")
    if cls is LlamaCppBackend:
        return LlamaCppBackend.load(Path(spec).expanduser(), tokenizer, n_ctx=n_ctx)
    if cls is VLLMBackend:
        return VLLMBackend.load(spec, dtype=dtype, n_ctx=n_ctx)
    return HFBackend.load(spec, dtype=dtype, batch_size=batch_size)


def chat_greedy(spec: str | None, prompts, max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers of a model (any spec load_backend takes) to single-turn prompts in its chat
    template, decoded and stripped."""
    backend = load_backend(spec, batch_size=batch_size)
    try:
        tok = backend.tokenizer
        ids = [backend.chat_prompt([{"role": "user", "content": p}]) for p in prompts]
        return [tok.decode(o, skip_special_tokens=True).strip()
                for o in backend.generate(ids, max_new_tokens, backend.stop_ids)]
    finally:
        backend.close()


__all__ = ["Backend", "Delta", "Detokenizer", "GenParams", "ScoreRequest", "stop_ids", "text_deltas", "HFBackend",
           "chat_greedy", "load_backend", "plan_batches", "LlamaCppBackend", "VLLMBackend"]
