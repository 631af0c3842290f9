"""Streaming text generation for `adept chat` and `adept serve`, over any backend.

An Engine is a backend (backends/: transformers for model directories and adapters, llama.cpp for
.gguf files, vLLM for merged directories) behind a lock, with the two calls the OpenAI API needs: a chat (the conversation
becomes ids through the backend's chat_prompt, the same ids an exam or replay would build) and a
plain completion. Both yield text deltas with special tokens removed, then one final delta with the
finish reason and the token counts, so callers never see template tokens such as <|im_end|>.
"""

from __future__ import annotations

import threading
from typing import Iterator

from ..backends import Delta, GenParams


class Engine:
    def __init__(self, backend):
        self.backend = backend
        self.name, self.model_id, self.n_ctx = backend.name, backend.model_id, backend.n_ctx
        self.lock = threading.Lock()      # one generation at a time: the model and its cache are shared
        self.tok_lock = threading.Lock()  # prompts are tokenized on the request threads, one at a time

    def count(self, text: str) -> int:
        with self.tok_lock:
            return self.backend.count(text)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        with self.tok_lock:
            return self.backend.chat_prompt(messages)

    def prompt_ids(self, prompt: str) -> list[int]:
        with self.tok_lock:
            return self.backend.encode(prompt)

    def generate(self, ids: list[int], p: GenParams) -> Iterator[Delta]:
        with self.lock:
            yield from self.backend.stream(ids, p)

    @property
    def batches(self) -> bool:
        """Whether concurrent requests can be decoded together (transformers and llama.cpp can)."""
        return self.backend.batches

    @property
    def continuous(self) -> bool:
        """Whether requests join the running ones at any step (vLLM's scheduler): start/step/abort."""
        return getattr(self.backend, "continuous", False)

    def generate_batch(self, prompts: list[list[int]], params: list[GenParams], cancelled) -> Iterator[tuple]:
        with self.lock:
            yield from self.backend.stream_batch(prompts, params, cancelled)

    def chat(self, messages: list[dict], p: GenParams) -> Iterator[Delta]:
        return self.generate(self.chat_ids(messages), p)

    def complete(self, prompt: str, p: GenParams) -> Iterator[Delta]:
        return self.generate(self.prompt_ids(prompt), p)

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            return self.backend.embed(texts)

    def close(self) -> None:
        self.backend.close()


def load_engine(spec: str | None, n_ctx: int = 4096, dtype: str = "float32", tokenizer: str | None = None,
                backend: str = "auto") -> Engine:
    """auto: llama.cpp for a .gguf file, transformers for any other model adept accepts; or the
    backend named (backends.load_backend)."""
    from ..backends import load_backend

    return Engine(load_backend(spec, backend, n_ctx=n_ctx, dtype=dtype, tokenizer=tokenizer))
