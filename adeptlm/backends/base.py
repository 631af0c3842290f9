"""What every model backend shares: the chat prompt, the stop tokens, token counts and streamed text.

Each backend (hf.py, llamacpp.py, vllm.py) wraps a loaded model and the Hugging Face tokenizer that
goes with it, and works on token ids. The text around the ids is built here once, for all of them:

- `chat_prompt(messages)`: the ids of a conversation's inference prompt, cut by the chat template's
  segments exactly as training cut them (templates.encode_prompt). Exams, export check, replay,
  retention, chat and serve all call this, so "the same prompt" is the same ids everywhere (tested in
  tests/unit/test_backends.py), whichever backend runs it.
- `stop_ids`: EOS and the template's end-of-turn token.
- `stream(ids, params)`: generated tokens turned into text deltas with special tokens removed, stop
  strings honoured and one final delta carrying the finish reason and token counts. A backend only
  supplies `_tokens(ids, params)`, an iterator of sampled token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, Sequence


@dataclass
class ScoreRequest:
    ids: list[int]
    prefix_len: int = 0  # leading tokens shared with the other requests of the same group


@dataclass
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Delta:
    text: str
    finish_reason: str | None = None       # set on the last delta only: "stop" or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


def stop_ids(tokenizer, template) -> list[int]:
    """EOS and the template's end-of-turn token (the ids generation stops at), sorted."""
    eot = tokenizer.convert_tokens_to_ids(template.eot) if template is not None and template.eot else None
    return sorted({i for i in (tokenizer.eos_token_id, eot) if isinstance(i, int)})


def _cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


class Detokenizer:
    """Generated token ids in, text deltas out, for one answer (push-style, so one loop can feed many).

    The ids so far are decoded whole at every step (a piece of a multi-byte character or a
    SentencePiece word start only decodes right in context) and only the new text is sent; a text
    ending in U+FFFD waits for the rest of its character. A tail that could begin a stop string is
    held back until it cannot. `done` turns true at a stop token, a stop string or max_tokens, and
    the last delta (finish reason, token counts) comes from `finish()`."""

    def __init__(self, tokenizer, stops_at: Sequence[int], params: GenParams, prompt_tokens: int):
        self.tokenizer, self.stops_at, self.params, self.prompt_tokens = tokenizer, set(stops_at), params, prompt_tokens
        self.ids: list[int] = []
        self.text, self.sent, self.reason, self.done = "", 0, "length", False
        self.hold = max((len(s) - 1 for s in params.stop), default=0)

    def push(self, t: int) -> list[Delta]:
        if self.done:
            return []
        if t in self.stops_at:
            self.reason, self.done = "stop", True
            return []
        self.ids.append(t)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        full = len(self.ids) >= self.params.max_tokens
        self.done = full
        if self.text.endswith("\ufffd") and not full:
            return []
        cut = _cut_at_stop(self.text, self.params.stop)
        if cut is not None:
            out = [Delta(self.text[self.sent:cut])] if cut > self.sent else []
            self.sent, self.text, self.reason, self.done = cut, self.text[:cut], "stop", True
            return out
        if len(self.text) - self.hold > self.sent:
            out = [Delta(self.text[self.sent:len(self.text) - self.hold])]
            self.sent = len(self.text) - self.hold
            return out
        return []

    def finish(self) -> list[Delta]:
        """What was held back, then the final delta."""
        out = [Delta(self.text[self.sent:])] if len(self.text) > self.sent else []
        self.sent = len(self.text)
        return out + [Delta("", self.reason, self.prompt_tokens, len(self.ids) + (self.reason == "stop"))]


def text_deltas(tokens: Iterator[int], tokenizer, stops_at: Sequence[int], params: GenParams,
                prompt_tokens: int) -> Iterator[Delta]:
    """Text deltas of a stream of generated token ids (Detokenizer, pulled). Closing the generator
    closes `tokens` too, which stops generation (a client that went away)."""
    d = Detokenizer(tokenizer, stops_at, params, prompt_tokens)
    try:
        for t in tokens:
            yield from d.push(t)
            if d.done:
                break
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
    yield from d.finish()


class Backend:
    """The contract every backend keeps, and the shared half of it.

    A backend sets `tokenizer`, `name`, `model_id` and `n_ctx`, and says what it can do through its
    capability flags; a caller checks a flag instead of a backend's name. What each flag promises:

    - `scores`: `last_logits` and `continuation_logprobs` (every next-token logit: the letter and
      cloze formulations, perplexity, the export check);
    - `generate`: greedy batches of ids (the generate formulation, replay, retention, arena);
    - `streams`: `_tokens` (sampled text through `stream`: chat and serve);
    - `batches`: `_steps` (several sequences decoded together: `stream_batch`);
    - `embeds`: `embed`.

    Prompts become ids here only (`chat_prompt`, `encode`), so every backend sees the same ids.
    """

    name = "backend"
    tokenizer = None
    scores = False
    streams = True
    batches = False   # whether _steps decodes several sequences together (then stream_batch works)
    embeds = False

    @property
    def formulations(self) -> tuple[str, ...]:
        """The exam formulations this backend can score (evaluate/exam.py's modes)."""
        return ("letter", "cloze", "generate") if self.scores else ("generate",)

    def last_logits(self, requests: Sequence["ScoreRequest"]):
        """Each prompt's logits for its next token (one row per request)."""
        raise NotImplementedError(f"{self.name} returns no logits (scores = False)")

    def next_token_scores(self, requests: Sequence["ScoreRequest"], token_ids: Sequence[int]) -> list[list[float]]:
        """Scores of each of `token_ids` as the next token after each request, comparable within a
        request (the letter formulation's argmax): here the logits, from `last_logits`."""
        rows = self.last_logits(requests)
        return [[float(row[t]) for t in token_ids] for row in rows]

    def continuation_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """The summed log-probability of each continuation after its context."""
        raise NotImplementedError(f"{self.name} returns no logits (scores = False)")

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop_ids: Sequence[int]) -> list[list[int]]:
        """Greedy continuations of each prompt, the stop token excluded."""
        raise NotImplementedError(f"{self.name} does not generate")

    @cached_property
    def template(self):
        """The tokenizer's own chat template, or None when it has none (completions only)."""
        from ..templates import get_template

        return get_template(self.tokenizer, "auto") if getattr(self.tokenizer, "chat_template", None) else None

    @cached_property
    def stop_ids(self) -> list[int]:
        return stop_ids(self.tokenizer, self.template)

    def chat_prompt(self, messages: Sequence[dict], template=None) -> list[int]:
        """Ids of the inference prompt for a conversation ending with a user turn."""
        from ..errors import AdeptError
        from ..templates import encode_prompt

        template = template or self.template
        if template is None:
            raise AdeptError(f"{getattr(self, 'model_id', 'this model')} has no chat template: use completions, "
                             "or a model with one")
        return encode_prompt(self.tokenizer, template, messages)

    def encode(self, text: str) -> list[int]:
        """Ids of a plain completion prompt (with BOS where the tokenizer adds one)."""
        return self.tokenizer(text)["input_ids"]

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(self, ids: Sequence[int], params: GenParams) -> Iterator[Delta]:
        return text_deltas(self._tokens(list(ids), params), self.tokenizer, self.stop_ids, params, len(ids))

    def _tokens(self, ids: list[int], params: GenParams) -> Iterator[int]:
        raise NotImplementedError(f"{self.name} does not stream")

    def _steps(self, prompts: Sequence[list[int]], params: GenParams, max_new: int,
               finished: Sequence[bool]) -> Iterator[list[int | None]]:
        """Each decoding step's new token for every row (None for a row that has none this step); a
        row that the consumer marks in `finished` needs no more tokens."""
        raise NotImplementedError(f"{self.name} does not decode several sequences together")

    def stream_batch(self, prompts: Sequence[list[int]], params: Sequence[GenParams],
                     cancelled: Sequence | None = None) -> Iterator[tuple[int, Delta]]:
        """Several answers decoded together: (row, delta) pairs as they come.

        The rows share one sampling setting (temperature and top-p of params[0]; the caller groups
        requests by it) and each keeps its own max_tokens and stop strings. A row whose event in
        `cancelled` is set gets no more deltas (nor, where the backend can, more computation); when
        every row is done, generation stops."""
        detok = [Detokenizer(self.tokenizer, self.stop_ids, p, len(ids)) for ids, p in zip(prompts, params)]
        finished = [False] * len(prompts)
        steps = self._steps(prompts, params[0], max(p.max_tokens for p in params), finished)
        try:
            for step in steps:
                for row, t in enumerate(step):
                    if finished[row] or t is None:
                        continue
                    if cancelled is not None and cancelled[row].is_set():
                        finished[row] = True
                        continue
                    for d in detok[row].push(t):
                        yield row, d
                    if detok[row].done:
                        finished[row] = True
                        for d in detok[row].finish():
                            yield row, d
                if all(finished):
                    break
        finally:
            steps.close()
        for row, d in enumerate(detok):          # generation ended first (every row at EOS or the longest limit)
            if not finished[row] and not (cancelled is not None and cancelled[row].is_set()):
                for delta in d.finish():
                    yield row, delta

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text: the mean of the last hidden state over its tokens (the
        seed's OpenAI server's embeddings)."""
        raise NotImplementedError(f"{self.name} gives no embeddings")

    def close(self) -> None:
        pass
