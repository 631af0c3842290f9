"""Chat templates with loss masks: render a conversation and say which tokens are trained.

A template is the tokenizer's own Jinja chat template, a named one (`chatml`, `llama3`, `gemma`,
`alpaca`) or a `.jinja` file. All three go through the tokenizer's `apply_chat_template`, so
inference and training render the same text.

Loss mask: a conversation is cut into segments at the points where each assistant reply begins
and ends, by rendering its prefixes (the prompt before turn i with the generation prompt, then the
conversation through turn i). Only the assistant's content and its end-of-turn token are trained;
system, user, headers and the template's glue after the end-of-turn token get label -100. Every
assistant turn is trained. The segments are tokenised one by one, so the token ids of the
inference prompt (`encode_prompt`) are by construction the prefix of the training ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import AdeptError

IGNORE_INDEX = -100

LLAMA3_DEFAULT_SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"

CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# The seed's Llama-3-Instruct format (SPEC section 1), with its default system prompt. BOS is
# part of the rendering so training and inference agree (the seed trained without it and
# prompted with it).
LLAMA3 = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n" + LLAMA3_DEFAULT_SYSTEM + "<|eot_id|>' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)

# Gemma's turn format: `<start_of_turn>user` / `<start_of_turn>model`, each turn closed by
# `<end_of_turn>` and a newline; a system message has no turn of its own and opens the first user
# turn, followed by a blank line (as Gemma's own template does). BOS is written by the template.
GEMMA = (
    "{{- '<bos>' -}}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '<start_of_turn>user\\n' + ns.prefix + message['content'] + '<end_of_turn>\\n' }}"
    "{%- set ns.prefix = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

ALPACA = (
    "{%- if messages[0]['role'] == 'system' -%}{{ messages[0]['content'] + '\\n\\n' }}"
    "{%- else -%}{{ 'Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\\n\\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class NamedTemplate:
    jinja: str
    eot: str | None  # None: the tokenizer's EOS
    tokens: tuple[str, ...]  # special tokens the tokenizer must have


NAMED_TEMPLATES = {
    "chatml": NamedTemplate(CHATML, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
    "llama3": NamedTemplate(LLAMA3, "<|eot_id|>",
                            ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "gemma": NamedTemplate(GEMMA, "<end_of_turn>", ("<bos>", "<start_of_turn>", "<end_of_turn>")),
    "alpaca": NamedTemplate(ALPACA, None, ()),
}


@dataclass(frozen=True)
class Template:
    name: str  # "tokenizer", a named template, or a file path
    jinja: str
    eot: str  # the end-of-turn token string that closes an assistant reply


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where not trained

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def get_template(tokenizer, name: str | None = None) -> Template:
    """The tokenizer's own template (name None/'auto'), a named template, or a .jinja file."""
    if name in (None, "", "auto", "tokenizer"):
        jinja = getattr(tokenizer, "chat_template", None)
        if not jinja or not isinstance(jinja, str):
            raise AdeptError("the tokenizer has no chat template: pass --template "
                             f"({', '.join(NAMED_TEMPLATES)} or a .jinja file)")
        return Template("tokenizer", jinja, _find_eot(tokenizer, jinja))
    if name in NAMED_TEMPLATES:
        named = NAMED_TEMPLATES[name]
        vocab = tokenizer.get_vocab()
        missing = [t for t in named.tokens if t not in vocab]
        if missing:
            raise AdeptError(f"template '{name}' needs the special tokens {', '.join(missing)}, which this "
                             "tokenizer lacks: use its own template or another --template")
        eot = named.eot or tokenizer.eos_token
        if not eot:
            raise AdeptError(f"template '{name}' ends turns with the EOS token, but the tokenizer has none")
        return Template(name, named.jinja, eot)
    path = Path(name)
    if path.is_file():
        jinja = path.read_text(encoding="utf-8")
        return Template(str(path), jinja, _find_eot(tokenizer, jinja))
    raise AdeptError(f"unknown template '{name}': expected one of {', '.join(NAMED_TEMPLATES)}, "
                     "'auto' (the tokenizer's own) or a .jinja file")


def _find_eot(tokenizer, jinja: str) -> str:
    """The special token a template writes right after an assistant reply."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ANSWER-PROBE"}]
    full = render(tokenizer, jinja, probe, add_generation_prompt=False)
    at = full.rfind("ANSWER-PROBE")
    after = full[at + len("ANSWER-PROBE"):] if at >= 0 else ""
    specials = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.added_tokens_decoder.values()}
    hits = [(after.find(s), s) for s in specials if s and after.find(s) >= 0]
    if not hits:
        raise AdeptError("the chat template does not close an assistant reply with a special token, so the "
                         "model would never learn to stop: pass --template")
    return min(hits, key=lambda h: (h[0], -len(h[1])))[1]


def render(tokenizer, jinja: str, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), chat_template=jinja, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def segments(tokenizer, template: Template, messages: Sequence[dict],
             add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the full rendering of the conversation."""
    out: list[tuple[str, bool]] = []
    done = ""  # rendering of the conversation through the last assistant turn handled
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        if i == 0:
            raise AdeptError("a conversation cannot start with the assistant")
        prompt = render(tokenizer, template.jinja, messages[:i], add_generation_prompt=True)
        full = render(tokenizer, template.jinja, messages[: i + 1], add_generation_prompt=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise AdeptError(f"chat template '{template.name}' renders earlier turns differently once later "
                             "turns are added, so loss masks cannot be cut: pass --template")
        out.append((prompt[len(done):], False))
        reply = full[len(prompt):]
        content_at = reply.find(msg["content"]) if msg["content"] else -1
        end = reply.find(template.eot, content_at + len(msg["content"]) if content_at >= 0 else 0)
        if end < 0:
            raise AdeptError(f"chat template '{template.name}' did not close assistant turn {i} with "
                             f"{template.eot!r}")
        end += len(template.eot)
        out.append((reply[:end], True))
        out.append((reply[end:], False))
        done = full
    if add_generation_prompt or not out:
        tail = render(tokenizer, template.jinja, messages, add_generation_prompt=add_generation_prompt)
        if not tail.startswith(done):
            raise AdeptError(f"chat template '{template.name}' is not prefix-stable: pass --template")
        out.append((tail[len(done):], False))
    return [(text, trained) for text, trained in out if text]


def _encode_segments(tokenizer, pieces: list[tuple[str, bool]]) -> Encoded:
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in pieces:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if trained else [IGNORE_INDEX] * len(seg)
    return Encoded(ids, labels)


def encode_conversation(tokenizer, template: Template, messages: Sequence[dict]) -> Encoded:
    """Token ids and labels for training: assistant content and its end-of-turn token trained."""
    return _encode_segments(tokenizer, segments(tokenizer, template, messages))


def encode_prompt(tokenizer, template: Template, messages: Sequence[dict]) -> list[int]:
    """Token ids of the inference prompt (generation prompt added) for a conversation ending with the user."""
    return _encode_segments(tokenizer, segments(tokenizer, template, messages, add_generation_prompt=True)).input_ids


def show_mask(tokenizer, enc: Encoded, left: str = "[[", right: str = "]]") -> str:
    """The rendered text with trained spans wrapped in markers, for a person to check the mask."""
    out, run, trained = [], [], False

    def flush():
        if run:
            text = tokenizer.decode(run, skip_special_tokens=False)
            out.append(f"{left}{text}{right}" if trained else text)

    for tok, lab in zip(enc.input_ids, enc.labels):
        t = lab != IGNORE_INDEX
        if t != trained:
            flush()
            run, trained = [], t
        run.append(tok)
    flush()
    return "".join(out)
