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


def load_backend(spec: str | None, batch_size: int = 8, n_ctx: int = 4096, dtype: str = "float32",
                 tokenizer: str | None = None) -> Backend:
    """llama.cpp for a .gguf file (its tokenizer read from the file, or from `tokenizer`), transformers
    for any other model adept accepts (a known name, a HF directory, a LoRA adapter applied unmerged)."""
    if spec and str(spec).endswith(".gguf"):
        from pathlib import Path

        from ..errors import AdeptError

        path = Path(spec).expanduser()
        if not path.is_file():
            raise AdeptError(f"{path}: no such GGUF file")
        return LlamaCppBackend.load(path, tokenizer, n_ctx=n_ctx)
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
