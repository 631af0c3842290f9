"""The llama.cpp backend: a GGUF file run by llama-cpp-python, on the same token ids as transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from .base import Backend, GenParams, ScoreRequest


NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # the Makefile's NO_AMX
AMX_FIX = (f"CMAKE_ARGS=\"-DCMAKE_C_FLAGS='{NO_AMX}' -DCMAKE_CXX_FLAGS='{NO_AMX}'\" "
           "pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python")


def refuse_amx_build() -> None:
    """Stop with one line, instead of a segmentation fault, when llama.cpp was built with its AMX kernels.

    llama-cpp-python 0.3.36 built with -march=native on a Xeon with AMX died on the first decode of
    both quantised files tried: gemma3 Q8_0 (SIGSEGV in ggml_backend_amx_mul_mat, from gdb) and
    SmolLM2 Q4_1 (no backtrace taken); the Makefile builds it without AMX. The same machine-dependent
    crash is llama.cpp issue #20824 (closed as stale, unfixed). ADEPT_ALLOW_AMX=1 skips this check (a
    later llama.cpp may have fixed the kernel).
    """
    import os

    import llama_cpp

    if os.environ.get("ADEPT_ALLOW_AMX") == "1":
        return
    if b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info():
        from ..errors import AdeptError
        raise AdeptError("this llama-cpp-python was built with llama.cpp's AMX kernels, which crashed here on "
                         f"quantised files: rebuild it without them ({AMX_FIX}), or set ADEPT_ALLOW_AMX=1 to try")


class LlamaCppBackend(Backend):
    """A GGUF file run by llama.cpp (llama-cpp-python), with the same interface as HFBackend.

    Prompts are tokenized by a Hugging Face tokenizer (the exam and template code work on ids), so
    both backends see the same ids. Scoring evaluates one sequence at a time; the key/value cache keeps
    the longest prefix shared with the previous sequence, so a shared exam header, demonstrations
    and a question's context under its options cost only their new tokens, and a continuation's
    tokens go in one decode with logits asked at each of them. Putting several questions in one
    decode as parallel sequences gains nothing on a small CPU: llama.cpp's prompt throughput there is
    flat from 64 to 1024 tokens a decode, the matmul loop being most of a decode (bench/RESULTS.md,
    "Exams through llama.cpp"). Several answers are generated together
    (`_steps`, serving's batches) in a second context with one sequence per answer, since
    llama-cpp-python's Llama class runs one sequence per context.
    """
    name = "llama.cpp"
    scores = batches = embeds = True
    n_batch = 512        # tokens per llama_decode call, in both contexts

    def __init__(self, path, tokenizer, n_ctx: int = 4096):
        import os

        try:
            from llama_cpp import Llama
        except ImportError:
            from ..errors import AdeptError
            raise AdeptError("running a .gguf file with llama.cpp needs llama-cpp-python: "
                             "pip install llama-cpp-python (or pass --backend transformers)") from None
        refuse_amx_build()
        try:
            self.llm = Llama(str(path), n_ctx=n_ctx, n_batch=self.n_batch, logits_all=False, verbose=False,
                             n_threads=os.cpu_count() or 1)
        except ValueError as exc:      # llama-cpp-python's "Failed to load model from file"
            from ..errors import AdeptError
            raise AdeptError(f"{path}: llama.cpp cannot load this file ({exc})") from None
        self.tokenizer, self.batch_size, self.n_ctx = tokenizer, 1, n_ctx
        self.path, self._embedder, self._batcher = Path(path), None, None
        self.model_id = self.path.stem
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def load(cls, path, tokenizer_spec=None, n_ctx: int = 4096) -> "LlamaCppBackend":
        from ..models import gguf_tokenizer, load_tokenizer

        path = Path(path)
        tok = load_tokenizer(tokenizer_spec) if tokenizer_spec else gguf_tokenizer(path)
        return cls(path, tok, n_ctx)

    def close(self) -> None:
        self._free_batcher()
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

    def _logits_from(self, ids: Sequence[int], first: int):
        """float32 numpy logits [len(ids) - first, vocab] of the token after each of positions
        first..len(ids)-1, evaluating only what the key/value cache lacks from position `first` on.

        Llama.eval asks llama.cpp for the last position's logits only; a continuation needs one row
        per token, and asking for them in the same decode replaces one decode per token (written
        against llama-cpp-python 0.3.36's Llama: input_ids, n_tokens, _ctx, _batch)."""
        import numpy as np

        llm = self.llm
        keep = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, first)            # logits exist only for positions decoded in this call
        llm.n_tokens = keep
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        n_vocab, b, rows = llm.n_vocab(), llm._batch.batch, []
        for start in range(keep, len(ids), self.n_batch):
            chunk = list(ids[start: start + self.n_batch])
            for j, t in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j], b.seq_id[j][0] = t, start + j, 1, 0
                b.logits[j] = start + j >= first
            b.n_tokens = len(chunk)
            llm._ctx.decode(llm._batch)
            llm.input_ids[start: start + len(chunk)] = chunk
            llm.n_tokens = start + len(chunk)
            rows += [np.ctypeslib.as_array(llm._ctx.get_logits_ith(j), shape=(n_vocab,)).copy()
                     for j in range(len(chunk)) if start + j >= first]
        return np.stack(rows)

    def next_logits(self, ids: Sequence[int]):
        """float32 numpy logits of the token after ids, evaluating only what the cache lacks."""
        return self._logits_from(ids, len(ids) - 1)[0]

    def last_logits(self, requests: Sequence[ScoreRequest]):
        import torch

        return torch.stack([torch.from_numpy(self.next_logits(r.ids)) for r in requests])

    def continuation_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Each continuation scored in one decode of its tokens after the cached context."""
        import torch

        out = []
        for ctx, cont in pairs:
            logits = torch.from_numpy(self._logits_from(list(ctx) + list(cont[:-1]), len(ctx) - 1))
            logprobs = torch.log_softmax(logits, dim=-1)
            out.append(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum().item())
        return out

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        """Greedy continuations (stop token excluded), one prompt at a time on the main context.

        Not through the parallel sequences of _steps: exam prompts share a long header that the main
        context's cache reuses from one question to the next, and in the unified cache every row's
        attention spans all rows' cells, so the batched path was about three times slower on an exam
        (bench/RESULTS.md, "Exams through llama.cpp")."""
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

    def _batch_context(self, n_seq: int):
        """A llama.cpp context over the loaded weights for decoding up to n_seq sequences at once (made
        on first use, remade larger when a batch needs more). Its key/value cache is unified: the
        sequences share n_ctx cells, so it takes no more memory than the main context."""
        import llama_cpp as C

        if self._batcher is not None and self._batcher[1] >= n_seq:
            return self._batcher[0]
        self._free_batcher()
        p = C.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = self.n_ctx, self.n_batch, self.n_batch
        p.n_seq_max, p.kv_unified = max(n_seq, 8), True
        p.n_threads = p.n_threads_batch = self.llm.n_threads
        ctx = C.llama_init_from_model(self.llm.model, p)
        if not ctx:
            from ..errors import AdeptError
            raise AdeptError(f"{self.path}: llama.cpp could not make a context for {n_seq} sequences")
        self._batcher = (ctx, p.n_seq_max)
        return ctx

    def _free_batcher(self) -> None:
        if self._batcher is not None:
            import llama_cpp as C
            C.llama_free(self._batcher[0])
            self._batcher = None

    @staticmethod
    def _sampler(params: GenParams):
        """llama.cpp's sampler chain as Llama.generate builds it (top-k 40, top-p, min-p 0.05,
        temperature, then a random draw; greedy at temperature 0), one per sequence."""
        import llama_cpp as C

        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        else:
            for s in (C.llama_sampler_init_top_k(40), C.llama_sampler_init_top_p(params.top_p, 1),
                      C.llama_sampler_init_min_p(0.05, 1), C.llama_sampler_init_temp(params.temperature),
                      C.llama_sampler_init_dist(C.LLAMA_DEFAULT_SEED)):   # the default seed means a random one
                C.llama_sampler_chain_add(chain, s)
        return chain

    def _steps(self, prompts: Sequence[list[int]], params: GenParams, max_new: int,
               finished: Sequence[bool] | None = None) -> Iterator[list[int | None]]:
        """Each step's new token for every row (None where a row has none), the rows decoded as parallel
        sequences of one context. Rows go in groups whose prompts plus max_new tokens fit the n_ctx
        cells; a row marked `finished` is dropped from the next step's batch."""
        group: list[int] = []
        used = 0
        for row, ids in enumerate(prompts):
            need = len(ids) + max_new
            if group and used + need > self.n_ctx:
                yield from self._group_steps(prompts, group, params, max_new, finished)
                group, used = [], 0
            group.append(row)
            used += need
        if group:
            yield from self._group_steps(prompts, group, params, max_new, finished)

    def _group_steps(self, prompts, rows: list[int], params: GenParams, max_new: int, finished):
        import llama_cpp as C

        from ..errors import AdeptError

        ctx = self._batch_context(len(rows))
        C.llama_memory_clear(C.llama_get_memory(ctx), True)
        batch = C.llama_batch_init(max(self.n_batch, len(rows)), 0, 1)
        samplers = {r: self._sampler(params) for r in rows}
        seq = {r: i for i, r in enumerate(rows)}     # each row's sequence id in this context

        def decode(items):
            """items: (row, token, position, wants logits); returns {row: sampled token} for those wanting them."""
            for j, (r, t, pos, want) in enumerate(items):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, pos, 1
                batch.seq_id[j][0], batch.logits[j] = seq[r], want
            batch.n_tokens = len(items)
            if C.llama_decode(ctx, batch) != 0:
                raise AdeptError(f"{self.path}: llama.cpp could not decode a batch of {len(items)} tokens")
            return {r: C.llama_sampler_sample(samplers[r], ctx, j) for j, (r, _, _, want) in enumerate(items) if want}

        try:
            flat = [(r, t, k, k == len(prompts[r]) - 1) for r in rows for k, t in enumerate(prompts[r])]
            last: dict[int, int] = {}
            for start in range(0, len(flat), self.n_batch):     # the prompts, n_batch tokens per call
                last.update(decode(flat[start: start + self.n_batch]))
            pos = {r: len(prompts[r]) for r in rows}
            for step in range(max_new):
                yield [last.get(r) for r in range(len(prompts))]
                live = [r for r in rows if r in last and last[r] not in self.stop_ids and not (finished and finished[r])]
                if not live or step == max_new - 1:
                    break
                last = decode([(r, last[r], pos[r], True) for r in live])
                for r in live:
                    pos[r] += 1
        finally:
            for chain in samplers.values():
                C.llama_sampler_free(chain)
            C.llama_batch_free(batch)
