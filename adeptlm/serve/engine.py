"""Streaming text generation for `adept chat` and `adept serve`, over any backend.

An Engine is a backend (backends/: transformers for model directories and adapters, llama.cpp for
.gguf files) behind a lock, with the two calls the OpenAI API needs: a chat (the conversation
becomes ids through the backend's chat_prompt, the same ids an exam or replay would build) and a
plain completion. Both yield text deltas with special tokens removed, then one final delta with the
finish reason and the token counts, so callers never see template tokens such as <|im_end|>.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from ..backends import Delta, GenParams
from ..errors import AdeptError


class Engine:
    def __init__(self, backend):
        self.backend = backend
        self.name, self.model_id, self.n_ctx = backend.name, backend.model_id, backend.n_ctx
        self.lock = threading.Lock()   # one generation at a time: the model and its cache are shared

    def count(self, text: str) -> int:
        return self.backend.count(text)

    def chat(self, messages: list[dict], p: GenParams) -> Iterator[Delta]:
        if self.backend.template is None:
            raise AdeptError(f"{self.model_id} has no chat template: use completions, or a model with one")
        return self._locked(self.backend.chat_prompt(messages), p)

    def complete(self, prompt: str, p: GenParams) -> Iterator[Delta]:
        return self._locked(self.backend.encode(prompt), p)

    def _locked(self, ids: list[int], p: GenParams) -> Iterator[Delta]:
        with self.lock:
            yield from self.backend.stream(ids, p)

    def close(self) -> None:
        self.backend.close()


def load_engine(spec: str | None, n_ctx: int = 4096, dtype: str = "float32", tokenizer: str | None = None) -> Engine:
    """llama.cpp for a .gguf file (its tokenizer read from the file, or `tokenizer`), transformers for any
    other model adept accepts."""
    from ..backends import HFBackend, LlamaCppBackend

    if spec and str(spec).endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise AdeptError(f"{path}: no such GGUF file")
        return Engine(LlamaCppBackend.load(path, tokenizer, n_ctx=n_ctx))
    return Engine(HFBackend.load(spec, dtype=dtype))
