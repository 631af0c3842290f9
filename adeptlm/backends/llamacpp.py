"""The llama.cpp backend: a GGUF file run by llama-cpp-python, on the same token ids as transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from .base import Backend, GenParams, ScoreRequest


class LlamaCppBackend(Backend):
    """A GGUF file run by llama.cpp (llama-cpp-python), with the same interface as HFBackend.

    Prompts are tokenized by a Hugging Face tokenizer (the exam and template code work on ids), so
    both backends see the same ids. One sequence is evaluated at a time; the key/value cache keeps the
    longest prefix shared with the previous sequence, so a shared exam header, a continuation scored
    token by token and greedy decoding each cost only their new tokens.
    """
    name = "llama.cpp"

    def __init__(self, path, tokenizer, n_ctx: int = 4096):
        import os

        try:
            from llama_cpp import Llama
        except ImportError:
            from ..errors import AdeptError
            raise AdeptError("running a .gguf file with llama.cpp needs llama-cpp-python: "
                             "pip install llama-cpp-python (or pass --backend transformers)") from None
        self.llm = Llama(str(path), n_ctx=n_ctx, n_batch=512, logits_all=False, verbose=False,
                         n_threads=os.cpu_count() or 1)
        self.tokenizer, self.batch_size, self.n_ctx = tokenizer, 1, n_ctx
        self.path, self._embedder = Path(path), None
        self.model_id = Path(path).stem
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def load(cls, path, tokenizer_spec=None, n_ctx: int = 4096) -> "LlamaCppBackend":
        from transformers import AutoTokenizer

        path = Path(path)
        if tokenizer_spec:
            from ..models import load_tokenizer
            tok = load_tokenizer(tokenizer_spec)
        else:
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return cls(path, tok, n_ctx)

    def close(self) -> None:
        self.llm.close()
        if self._embedder is not None:
            self._embedder.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """llama.cpp's embedding mode, mean-pooled and normalised; a second context over the same file,
        made on first use (a context is made for either generation or embeddings)."""
        if self._embedder is None:
            import os

            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            self._embedder = Llama(str(self.path), n_ctx=self.n_ctx, embedding=True, verbose=False,
                                   pooling_type=LLAMA_POOLING_TYPE_MEAN, n_threads=os.cpu_count() or 1)
        return [self._embedder.embed(t, normalize=True) for t in texts]

    def next_logits(self, ids: Sequence[int]):
        """float32 numpy logits of the token after ids, evaluating only what the cache lacks."""
        import numpy as np

        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        keep = 0
        for a, b in zip(cached, ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)      # at least one token is evaluated, to refresh the logits
        llm.n_tokens = keep                 # eval() drops the cache beyond n_tokens first
        llm.eval(list(ids[keep:]))
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()

    def last_logits(self, requests: Sequence[ScoreRequest]):
        import torch

        return torch.stack([torch.from_numpy(self.next_logits(r.ids)) for r in requests])

    def continuation_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        import torch

        out = []
        for ctx, cont in pairs:
            total = 0.0
            for k, t in enumerate(cont):
                logits = torch.from_numpy(self.next_logits(ctx + cont[:k]))
                total += torch.log_softmax(logits, dim=-1)[t].item()
            out.append(total)
        return out

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        out = []
        for ids in prompts:
            new: list[int] = []
            while len(new) < max_new_tokens:
                t = int(self.next_logits(list(ids) + new).argmax())
                if t in stop_ids:
                    break
                new.append(t)
            out.append(new)
        return out

    def _tokens(self, ids: list[int], params: GenParams) -> Iterator[int]:
        """Sampled token ids from llama.cpp's own sampler chain (its defaults for top-k 40 and min-p
        0.05, as llama-cpp-python's completions use); temperature 0 is greedy. The cache keeps the
        longest prefix shared with the last sequence, so a conversation's earlier turns are not rerun."""
        if params.seed is not None:
            self.llm.set_seed(params.seed)
        yield from self.llm.generate(ids, temp=params.temperature, top_p=params.top_p, reset=True)
