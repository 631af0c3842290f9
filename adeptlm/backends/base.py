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


def text_deltas(tokens: Iterator[int], tokenizer, stops_at: Sequence[int], params: GenParams,
                prompt_tokens: int) -> Iterator[Delta]:
    """Text deltas of a stream of generated token ids.

    The ids so far are decoded whole at every step (a piece of a multi-byte character or a
    SentencePiece word start only decodes right in context) and only the new text is sent; a text
    ending in U+FFFD waits for the rest of its character. A tail that could begin a stop string is
    held back until it cannot. Closing the generator stops `tokens` too (a client that went away)."""
    ids: list[int] = []
    text, sent, finish = "", 0, "length"
    hold = max((len(s) - 1 for s in params.stop), default=0)
    try:
        for t in tokens:
            if t in stops_at:
                finish = "stop"
                break
            ids.append(t)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            full = len(ids) >= params.max_tokens
            if text.endswith("\ufffd") and not full:
                continue
            cut = _cut_at_stop(text, params.stop)
            if cut is not None:
                if cut > sent:
                    yield Delta(text[sent:cut])
                sent, text, finish = cut, text[:cut], "stop"
                break
            if len(text) - hold > sent:
                yield Delta(text[sent:len(text) - hold])
                sent = len(text) - hold
            if full:
                break
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
    if len(text) > sent:
        yield Delta(text[sent:])
    yield Delta("", finish, prompt_tokens, len(ids) + (finish == "stop"))


class Backend:
    """The shared half of a backend; subclasses set `tokenizer` and `name`, and define `_tokens`."""

    name = "backend"
    tokenizer = None

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
            raise AdeptError("this model's tokenizer has no chat template: use completions, or a model with one")
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

    def close(self) -> None:
        pass
