"""Streaming text generation over a loaded model, for `adept chat` and `adept serve`.

Two engines with one interface: llama.cpp for .gguf files (the chat template and end-of-turn
tokens come from the file's own metadata) and transformers for everything else (the tokenizer's
chat template; generation stops at EOS and at the template's end-of-turn token). Both yield text
deltas with special tokens removed, then one final delta that carries the finish reason and the
token counts, so callers never see template tokens such as <|im_end|>.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import AdeptError


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


def _cut_at_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int = 4096, threads: int | None = None):
        import os

        try:
            from llama_cpp import Llama
        except ImportError:
            raise AdeptError("a .gguf model needs llama-cpp-python: pip install 'adeptlm[llama]'") from None
        self.llm = Llama(str(path), n_ctx=n_ctx, verbose=False, n_threads=threads or os.cpu_count() or 1)
        self.model_id = path.stem
        self.n_ctx = n_ctx
        self.lock = threading.Lock()

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _run(self, chunks, text_of, prompt_tokens: int) -> Iterator[Delta]:
        finish, n = "length", 0
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = text_of(choice)
            if piece:
                n += 1
                yield Delta(piece)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        yield Delta("", finish, prompt_tokens, n)

    def chat(self, messages: list[dict], p: GenParams) -> Iterator[Delta]:
        with self.lock:
            chunks = self.llm.create_chat_completion(messages, stream=True, max_tokens=p.max_tokens,
                                                     temperature=p.temperature, top_p=p.top_p, seed=p.seed,
                                                     stop=p.stop or None)
            prompt_tokens = sum(self.count(m.get("content") or "") for m in messages)
            yield from self._run(chunks, lambda c: c.get("delta", {}).get("content"), prompt_tokens)

    def complete(self, prompt: str, p: GenParams) -> Iterator[Delta]:
        with self.lock:
            chunks = self.llm.create_completion(prompt, stream=True, max_tokens=p.max_tokens,
                                                temperature=p.temperature, top_p=p.top_p, seed=p.seed,
                                                stop=p.stop or None)
            yield from self._run(chunks, lambda c: c.get("text"), self.count(prompt))

    def close(self) -> None:
        self.llm.close()


class HFEngine:
    name = "transformers"

    def __init__(self, spec: str, dtype: str = "float32"):
        from ..models import load_model
        from ..templates import get_template

        self.model, self.tok = load_model(spec, dtype=dtype)
        self.model.eval()
        self.model_id = Path(str(spec)).name if spec else "smollm2-135m-instruct"
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 4096) or 4096)
        template = get_template(self.tok, "auto") if self.tok.chat_template else None
        eot = self.tok.convert_tokens_to_ids(template.eot) if template and template.eot else None
        self.stop_ids = sorted({i for i in (self.tok.eos_token_id, eot) if isinstance(i, int)})
        self.lock = threading.Lock()

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def chat(self, messages: list[dict], p: GenParams) -> Iterator[Delta]:
        if not self.tok.chat_template:
            raise AdeptError(f"{self.model_id} has no chat template: use completions, or a model with one")
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
        return self._generate(ids, p)

    def complete(self, prompt: str, p: GenParams) -> Iterator[Delta]:
        return self._generate(self.tok(prompt)["input_ids"], p)

    def _generate(self, ids: list[int], p: GenParams) -> Iterator[Delta]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop_now = threading.Event()

        class Stop(StoppingCriteria):          # a stop string was seen, or the client went away
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop_now.is_set(), dtype=torch.bool)

        with self.lock:
            streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
            result: dict = {}
            if p.seed is not None:
                torch.manual_seed(p.seed)
            sample = p.temperature > 0
            kwargs = dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=p.max_tokens, do_sample=sample, eos_token_id=self.stop_ids or None,
                          pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else
                          (self.stop_ids or [0])[0], streamer=streamer,
                          stopping_criteria=StoppingCriteriaList([Stop()]))
            if sample:
                kwargs.update(temperature=p.temperature, top_p=p.top_p)
            else:   # the model's generation_config may ask for sampling: greedy means greedy here
                kwargs.update(temperature=None, top_p=None, top_k=None)

            def work():
                try:
                    with torch.inference_mode():
                        result["out"] = self.model.generate(**kwargs)
                except BaseException as exc:      # surfaced to the caller below
                    result["error"] = exc
                    streamer.end()

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            text, sent, stopped_by_string = "", 0, False
            try:
                for piece in streamer:
                    text += piece
                    cut = _cut_at_stop(text, p.stop)
                    if cut is not None:
                        stop_now.set()
                        stopped_by_string = True
                        if cut > sent:
                            yield Delta(text[sent:cut])
                        sent = cut
                        break
                    # hold back a tail that could be the start of a stop string
                    hold = max((len(s) - 1 for s in p.stop), default=0)
                    if len(text) - hold > sent:
                        yield Delta(text[sent:len(text) - hold])
                        sent = len(text) - hold
            finally:
                stop_now.set()      # also when the consumer stops early (a closed connection)
                thread.join()
            if "error" in result:
                raise result["error"]
            if not stopped_by_string and len(text) > sent:
                tail = text[sent:]
                yield Delta(tail)
            new = result["out"][0, len(ids):].tolist()
            finish = "stop" if stopped_by_string or (new and new[-1] in self.stop_ids) else "length"
            yield Delta("", finish, len(ids), len(new))

    def close(self) -> None:
        pass


def load_engine(spec: str | None, n_ctx: int = 4096, dtype: str = "float32"):
    """llama.cpp for a .gguf file, transformers for any other model adept accepts."""
    if spec and str(spec).endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise AdeptError(f"{path}: no such GGUF file")
        return LlamaCppEngine(path, n_ctx=n_ctx)
    return HFEngine(spec, dtype=dtype)
