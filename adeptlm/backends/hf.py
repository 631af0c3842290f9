"""The transformers backend: scores, greedy batches and streamed sampling of a loaded model.

`HFBackend` runs a transformers model (a HF directory, or a base with a LoRA adapter applied
unmerged). Scoring pads on the right and reads each row's logits at its own last token, so padding
never changes a score, and batches are cut to spend little on padding (plan_batches); a prefix
shared by many prompts (an exam's header and demonstrations) is run once and its key/value cache
reused for every batch of suffixes.
"""

from __future__ import annotations

import copy
import threading
from typing import Iterator, Sequence

from .base import Backend, GenParams, ScoreRequest


def _broadcast_cache(past, rows: int):
    """The one-row prefix cache seen as `rows` rows without copying it: each layer's keys and values
    become expanded views, and the forward's own concatenation with the new tokens writes the only
    copy (repeat_interleave on a deep copy wrote two, hundreds of MB per batch at 5-shot)."""
    cache = copy.copy(past)
    cache.layers = []
    for layer in past.layers:
        view = copy.copy(layer)
        view.keys = layer.keys.expand(rows, -1, -1, -1)
        view.values = layer.values.expand(rows, -1, -1, -1)
        cache.layers.append(view)
    return cache


def _cache_name() -> str:
    """The keyword (and output field) of the key/value cache: `cache` in the transformers this project
    pins (5.25), `past_key_values` before the rename (5.19, which vLLM's environment has; 5.25 still
    takes the old name, with a deprecation warning on every call)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


CACHE = _cache_name()


# What one more forward pass costs, in padded tokens' worth of work: a forward's fixed cost, plus
# small batches running their matmuls less efficiently. 128 gave the fastest 0-shot C-Eval run of
# the values tried (64, 128) on the embedded model on a 2-core CPU.
BATCH_OVERHEAD_TOKENS = 128


# generate(): a batch of short prompts may hold more rows than batch_size, up to this many tokens
# (prompt and answer) per row of batch_size (see generate's docstring)
GENERATE_ROW_TOKENS = 512

# plan_batches' overhead for cloze rows (a question with its options packed after it): such rows run
# long, so a forward's fixed cost weighs less; 64 was faster than 128 (bench/RESULTS.md, History)
PACKED_OVERHEAD_TOKENS = 64


def plan_batches(lengths: Sequence[int], max_rows: int, overhead: int = BATCH_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split prompts into batches that waste little on padding.

    A right-padded batch costs its row count times its longest row; fixed batches of `max_rows` over
    an exam's prompts spent about 30% of the work on padding. Over the prompts sorted longest first,
    contiguous groups are optimal, so a small dynamic programme picks the cut points minimising
    padded tokens plus `overhead` per batch, with at most `max_rows` rows each. Returns indices into
    `lengths`, longest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + overhead + (end - start) * lengths[order[start]]
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], n
    while end:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]


class HFBackend(Backend):
    name = "transformers"
    scores = batches = embeds = True

    def __init__(self, model, tokenizer, batch_size: int = 8, model_id: str = "model"):
        self.model, self.tokenizer, self.batch_size, self.model_id = model, tokenizer, batch_size, model_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.n_ctx = int(getattr(getattr(model, "config", None), "max_position_embeddings", 4096) or 4096)

    @classmethod
    def load(cls, spec: str | None, dtype: str = "float32", batch_size: int = 8) -> "HFBackend":
        from pathlib import Path

        from ..models import DEFAULT_MODEL, load_model

        model, tok = load_model(spec, dtype=dtype)
        model.eval()
        return cls(model, tok, batch_size, Path(str(spec)).name if spec else DEFAULT_MODEL)

    def _forward(self, ids, mask, past=None, offset: int = 0, keep=None):
        """Logits of a right-padded batch; `keep` limits the LM head to these positions (a 1-D tensor)."""
        import torch

        positions = offset + torch.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], -1)
        if past is not None:
            mask = torch.cat([torch.ones(ids.shape[0], offset, dtype=mask.dtype), mask], dim=1)
        extra = {"logits_to_keep": keep} if keep is not None else {}
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **{CACHE: past},
                          use_cache=past is not None, **extra).logits

    def last_logits(self, requests: Sequence[ScoreRequest]):
        """Logits (float32, [n, vocab]) of the next token after each request's ids."""
        import torch

        out = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(tuple(r.ids[: r.prefix_len]), []).append(i)
        with torch.inference_mode():
            for prefix, idx in groups.items():
                past = None
                if prefix:
                    past = getattr(self.model(input_ids=torch.tensor([prefix]), use_cache=True), CACHE)
                plan = plan_batches([len(requests[i].ids) - len(prefix) for i in idx], self.batch_size)
                for chunk in ([idx[k] for k in batch] for batch in plan):
                    suffixes = [requests[i].ids[len(prefix):] for i in chunk]
                    if any(not s for s in suffixes):  # a prompt equal to the prefix: run it whole
                        for i in chunk:
                            out[i] = self.last_logits([ScoreRequest(requests[i].ids, 0)])[0]
                        continue
                    ids, mask, lengths = self._pad(suffixes)
                    cache = None if past is None else _broadcast_cache(past, len(chunk))
                    # only each row's last position is needed: skip the LM head everywhere else
                    keep = sorted({n - 1 for n in lengths})
                    logits = self._forward(ids, mask, cache, len(prefix), torch.tensor(keep))
                    for row, i in enumerate(chunk):
                        out[i] = logits[row, keep.index(lengths[row] - 1)].float()
        return torch.stack(out)

    def _pad(self, seqs):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        return ids, mask, [len(s) for s in seqs]

    def _pad_left(self, seqs):
        """Left-padded ids and mask, for generate() (it derives each row's positions from the mask)."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
        return ids, mask

    def continuation_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context.

        The prefix every context shares (an exam's header and demonstrations) runs once. Each
        distinct context (a question) then runs once with all its continuations packed after it in
        the same row: a 4-D attention mask lets each continuation see the question and its own
        earlier tokens only, and its positions start where the question ends, so every token is
        computed as in a forward of the question and that continuation alone, with no cache copied
        and no continuation padded to its longest sibling. Rows are batched by length (plan_batches)
        and the LM head runs only at the columns some row scores.

        A custom mask replaces the model's own, including a sliding window (Gemma 3): a question whose
        packed row would reach the window runs each continuation as an ordinary row instead, under the
        model's own masks."""
        import os

        import torch

        if any(not ctx for ctx, _ in pairs):
            raise ValueError("a continuation needs a context of at least one token")
        out = [0.0] * len(pairs)
        groups: dict[tuple, list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if cont:
                groups.setdefault(tuple(ctx), []).append(i)
        if not groups:
            return out
        # each question keeps at least its last token, whose logits predict its continuations' first
        shared = list(os.path.commonprefix([list(g[:-1]) for g in groups]))
        window = getattr(getattr(self.model, "config", None), "sliding_window", None) or float("inf")
        packed, single = [], []        # rows: (the context's rest, [continuation indices])
        for ctx, idx in groups.items():
            rest = list(ctx[len(shared):])
            if len(shared) + len(rest) + max(len(pairs[i][1]) for i in idx) < window - 1:
                packed.append((rest, idx))
            else:
                single += [(rest, [i]) for i in idx]
        with torch.inference_mode():
            past = self._extend(None, 0, shared)
            for rows, custom in ((packed, True), (single, False)):
                lengths = [len(rest) + sum(len(pairs[i][1]) - 1 for i in idx) for rest, idx in rows]
                for batch in plan_batches(lengths, self.batch_size, PACKED_OVERHEAD_TOKENS):
                    self._score_rows([rows[k] for k in batch], shared, past, pairs, out, custom)
        return out

    def _score_rows(self, rows, shared, past, pairs, out, custom: bool) -> None:
        """One forward over rows of (context rest, continuations packed after it), adding each
        continuation's log-likelihood to out. custom: the rows' own 4-D mask (several continuations
        a row); otherwise a plain padding mask (one continuation a row, the model's masks apply)."""
        import torch

        seqs, spans = [], []      # spans: (row, pair index, first column of its tokens after the first)
        for r, (rest, idx) in enumerate(rows):
            seq = list(rest)
            for i in idx:
                spans.append((r, i, len(seq)))
                seq += pairs[i][1][:-1]
            seqs.append(seq)
        ids, mask2d, lengths = self._pad(seqs)
        n, width, offset = len(rows), ids.shape[1], len(shared)
        pos = torch.zeros((n, width), dtype=torch.long)
        if custom:
            see = torch.zeros((n, 1, width, offset + width), dtype=torch.bool)
            see[:, :, :, :offset] = True
            causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
        for r, (rest, idx) in enumerate(rows):
            q = len(rest)
            pos[r, :lengths[r]] = offset + torch.arange(lengths[r])
            if custom:
                see[r, 0, :q, offset:offset + q] = causal[:q, :q]
        for r, i, start in spans:
            k = len(pairs[i][1]) - 1
            q = len(rows[r][0])
            pos[r, start:start + k] = offset + q + torch.arange(k)
            if custom:
                see[r, 0, start:start + k, offset:offset + q] = True
                see[r, 0, start:start + k, offset + start:offset + start + k] = causal[:k, :k]
        if custom:  # padding columns see themselves, so that no softmax row is empty
            for r in range(n):
                see[r, 0, lengths[r]:, offset + lengths[r]:] = causal[:width - lengths[r], :width - lengths[r]]
        # the columns whose logits are read: each question's last, and each continuation's tokens but its last
        cols = sorted({len(rows[r][0]) - 1 for r in range(n)} |
                      {c for r, i, start in spans for c in range(start, start + len(pairs[i][1]) - 1)})
        at = {c: k for k, c in enumerate(cols)}
        if custom and getattr(getattr(self.model, "config", None), "_attn_implementation", "sdpa") != "sdpa":
            # eager attention adds its mask to the scores: 0 where seen, the dtype's minimum elsewhere
            dtype = self.model.dtype
            see = torch.zeros(see.shape, dtype=dtype).masked_fill(~see, torch.finfo(dtype).min)
        cache = None if past is None else _broadcast_cache(past, n)
        logits = self.model(input_ids=ids, attention_mask=see if custom else self._with_prefix(mask2d, offset),
                            position_ids=pos, **{CACHE: cache}, use_cache=cache is not None,
                            logits_to_keep=torch.tensor(cols)).logits
        # log_softmax is one fused kernel on the CPU; logsumexp made several passes and was slower
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, i, start in spans:
            cont = pairs[i][1]
            where = torch.tensor([at[len(rows[r][0]) - 1]] + [at[c] for c in range(start, start + len(cont) - 1)])
            out[i] = logprobs[r, where, torch.tensor(cont)].sum().item()

    def _with_prefix(self, mask, offset: int):
        import torch

        return torch.cat([torch.ones(mask.shape[0], offset, dtype=mask.dtype), mask], dim=1) if offset else mask

    def _extend(self, base, offset: int, ids: list[int]):
        """The one-row cache of base's tokens followed by ids (base itself is left as it was)."""
        import torch

        if not ids:
            return base
        out = self.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, offset + len(ids), dtype=torch.long),
                         position_ids=torch.arange(offset, offset + len(ids)).unsqueeze(0),
                         **{CACHE: None if base is None else _broadcast_cache(base, 1)}, use_cache=True,
                         logits_to_keep=1)
        return getattr(out, CACHE)

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        """Greedy continuations (token ids, stop token excluded).

        Prompts of similar length are batched together and left-padded (the padding is masked and
        generate derives positions from the mask), so each row decodes as it would alone. A decoding
        step on a CPU costs nearly the same for 8 rows as for 32 (it is bound by reading the weights),
        so short prompts go up to 4 x batch_size at a time; long ones fewer, keeping rows x length
        within batch_size x GENERATE_ROW_TOKENS (figures: bench/RESULTS.md, the selection stage).
        """
        import torch

        out: list[list[int]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with torch.inference_mode():
            b = 0
            while b < len(order):
                longest = len(prompts[order[b]]) + max_new_tokens
                rows = max(self.batch_size, min(4 * self.batch_size, self.batch_size * GENERATE_ROW_TOKENS // longest))
                chunk = order[b: b + rows]
                b += rows
                ids, mask = self._pad_left([prompts[i] for i in chunk])
                width = ids.shape[1]
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, eos_token_id=list(stop_ids), pad_token_id=self.pad_id)
                for row, i in enumerate(chunk):
                    new = gen[row, width:].tolist()
                    cut = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
                    out[i] = new[:cut]
        return out


    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import torch

        seqs = [self.encode(t) for t in texts]
        out: list = [None] * len(seqs)
        with torch.inference_mode():
            for chunk in plan_batches([len(s) for s in seqs], self.batch_size):
                ids, mask, _ = self._pad([seqs[i] for i in chunk])
                hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).float()
                for row, i in enumerate(chunk):
                    out[i] = pooled[row].tolist()
        return out

    def _tokens(self, ids: list[int], params: GenParams) -> Iterator[int]:
        """Sampled (or, at temperature 0, greedy) token ids, one at a time; closing the iterator stops
        generation at the next step."""
        for step in self._steps([ids], params, params.max_tokens):
            yield step[0]

    def _steps(self, prompts: Sequence[list[int]], params: GenParams, max_new: int,
               finished: Sequence[bool] | None = None) -> Iterator[list[int]]:
        """Each decoding step's new token for every row, from generate() in a thread (left-padded, so
        each row decodes as it would alone); closing the iterator stops generation at the next step.
        Rows that are `finished` are still computed (generate() decodes the batch as one) and ignored."""
        import queue

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        stop_now, out = threading.Event(), queue.Queue()
        done = object()

        class Steps(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:          # generate() hands the prompt over first
                    self.first = False
                    return
                out.put(value.reshape(-1).tolist())

            def end(self):
                out.put(done)

        class Stop(StoppingCriteria):   # the consumer went away, or needs no more
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop_now.is_set(), dtype=torch.bool)

        if params.seed is not None:
            torch.manual_seed(params.seed)
        ids, mask = self._pad_left(prompts)
        sample = params.temperature > 0
        kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=sample,
                      eos_token_id=self.stop_ids or None, pad_token_id=self.pad_id, streamer=Steps(),
                      stopping_criteria=StoppingCriteriaList([Stop()]))
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:   # the model's generation_config may ask for sampling: greedy means greedy here
            kwargs.update(temperature=None, top_p=None, top_k=None)
        error: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:      # raised in the consumer below
                error.append(exc)
                out.put(done)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while (step := out.get()) is not done:
                yield step
        finally:
            stop_now.set()
            thread.join()
        if error:
            raise error[0]
