"""Tokenized training data: packing for pre-training, masked records for SFT, cached by fingerprint.

The cache key is a hash of the input files' bytes, the tokenizer (its vocabulary, merges, special
tokens and chat template) and every setting that changes the tokens, so changing any of them
rebuilds the cache (the seed reused a stale cache blindly). Caches are written to a temporary
sibling and renamed, so an interrupted build is never loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..atomic import atomic_output
from ..digest import file_digest
from .corpus import Document
from .instructions import Conversation


def tokenizer_digest(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True))
             .encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()


def fingerprint(files: Sequence[Path], tokenizer, settings: dict) -> str:
    """One hash over the files' contents, the tokenizer and the settings."""
    h = hashlib.sha256()
    for f in sorted(map(Path, files)):
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    h.update(tokenizer_digest(tokenizer).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cached(cache_dir: Path, name: str, fp: str, build: Callable[[], tuple]) -> tuple:
    """(dataset, stats dict, hit): the dataset cached under this fingerprint, or built by `build()`
    (which returns the dataset and its stats), saved atomically, and loaded back."""
    from datasets import load_from_disk

    target = cache_dir / f"{name}-{fp[:16]}"
    marker = target / "adeptlm-cache.json"
    if marker.is_file():
        return load_from_disk(str(target)), json.loads(marker.read_text())["stats"], True
    ds, stats = build()
    # Every rank builds (the cache may sit on each node's own disk); where they share one disk the
    # first to finish publishes and the others keep it: the fingerprint makes the copies identical.
    with atomic_output(target, keep_existing=True) as tmp:
        ds.save_to_disk(str(tmp))
        (tmp / "adeptlm-cache.json").write_text(json.dumps({"fingerprint": fp, "stats": stats}, default=str))
    return load_from_disk(str(target)), stats, False


def end_of_text_id(tokenizer) -> int:
    """The token placed between documents: <|endoftext|> / <|end_of_text|> / </s> / <eos> when the
    vocabulary has it as a special token, else EOS.

    Only special tokens count: Gemma 3's vocabulary also holds "</s>" as ordinary text (id 212, an
    added token with special=False), and closing documents with it taught the model a separator it
    never saw in pre-training instead of its <eos>.
    """
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    vocab = tokenizer.get_vocab()
    for tok in ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"):
        if vocab.get(tok) in special:
            return vocab[tok]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither an end-of-text nor an EOS token to separate documents")
    return tokenizer.eos_token_id


@dataclass
class PackStats:
    documents: int = 0
    tokens: int = 0
    blocks: int = 0
    padding: int = 0  # block_size x blocks - tokens: room left in shorter blocks (padded at batch time)


def start_of_text_ids(tokenizer) -> list[int]:
    """The BOS token when the tokenizer puts one before every text it encodes (Gemma, Llama), else []."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    return [bos] if tokenizer("a")["input_ids"][:1] == [bos] else []


def pack_documents(docs: Sequence[Document], tokenizer, block_size: int, num_proc: int | None = None,
                   isolate: bool = True):
    """Tokenize documents, each one opened by the tokenizer's BOS (where it adds one) and closed by one
    end-of-text token, and pack them into blocks of at most block_size tokens.

    Every token is kept; a block shorter than block_size is padded at batch time (the padding
    masked). The BOS matters for models trained always to see it first (Gemma 3: see
    bench/RESULTS.md, continued pre-training on gemma3-270m): training on BOS-less blocks adapts the
    model to a format that inference, exams and `adept eval ppl` never present.

    isolate (--packing documents): whole documents are placed into blocks by best-fit decreasing
    (the longest first, each into the fullest block it still fits), so a document is cut only where it
    is longer than a block; each block gets position_ids that restart at 0 where a document (or a
    piece of one) starts. Given position_ids and no attention mask, transformers (5.x,
    masking_utils.find_packed_sequence_indices) makes the attention block-diagonal, so each document
    is trained as if it were alone, which is how inference presents text; the first token of each
    document is not trained, since nothing of its own precedes it. isolate=False (--packing stream): the
    documents are joined in order and the stream is cut every block_size tokens, so blocks attend
    across documents, as the seed's group_texts blocks do; every token is trained.
    """
    from datasets import Dataset

    import numpy as np

    eot = end_of_text_id(tokenizer)
    bos = start_of_text_ids(tokenizer)
    texts = Dataset.from_dict({"text": [d.text for d in docs]})
    tokenized = texts.map(lambda b: {"ids": tokenizer(b["text"], add_special_tokens=False)["input_ids"]},
                          batched=True, remove_columns=["text"], num_proc=num_proc, desc="tokenizing documents")
    if isolate:
        pieces = [[*bos, *ids, eot] for ids in tokenized["ids"]]
        blocks = best_fit_blocks(pieces, block_size)
        tokens = sum(map(len, pieces))
        stats = PackStats(len(docs), tokens, len(blocks), block_size * len(blocks) - tokens)
        return Dataset.from_dict({
            "input_ids": [[t for piece in b for t in piece] for b in blocks],
            "labels": [[t if k else -100 for piece in b for k, t in enumerate(piece)] for b in blocks],
            "position_ids": [[k for piece in b for k in range(len(piece))] for b in blocks]}), stats
    stream = np.fromiter((t for ids in tokenized["ids"] for t in (*bos, *ids, eot)), dtype=np.int64)
    blocks = [stream[i: i + block_size].tolist() for i in range(0, len(stream), block_size)]
    stats = PackStats(len(docs), int(len(stream)), len(blocks), block_size - len(blocks[-1]))
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks}), stats


def best_fit_blocks(pieces: list[list[int]], block_size: int) -> list[list[list[int]]]:
    """Best-fit decreasing bin packing: each block a list of whole pieces of at most block_size tokens
    in all. A piece longer than a block is first cut into full blocks and a remainder, which is
    packed like any other piece. Deterministic: ties keep the documents' order."""
    import bisect

    blocks: list[list[list[int]]] = []
    rest = []
    for piece in pieces:
        whole = len(piece) - len(piece) % block_size
        blocks.extend([[piece[i: i + block_size]] for i in range(0, whole, block_size)])
        if len(piece) > whole:
            rest.append(piece[whole:])
    free: list[tuple[int, int]] = []  # (tokens still free, block index), sorted
    for piece in sorted(rest, key=len, reverse=True):
        at = bisect.bisect_left(free, (len(piece), -1))
        if at < len(free):
            room, k = free.pop(at)
            blocks[k].append(piece)
        else:
            room, k = block_size, len(blocks)
            blocks.append([piece])
        if room - len(piece) > 0:
            bisect.insort(free, (room - len(piece), k))
    return blocks


@dataclass
class SftStats:
    records: int = 0
    truncated: int = 0  # records cut at max_seq_length (their end-of-turn token may be lost)
    dropped: int = 0  # over-long records dropped (--truncation drop) or with nothing left to train
    tokens: int = 0
    trained_tokens: int = 0
    warnings: list[str] = field(default_factory=list)


def encode_records(convs: Sequence[Conversation], tokenizer, template, max_len: int, truncation: str,
                   num_proc: int | None = None):
    """Render and mask conversations; returns a dataset with input_ids, labels and length, and stats."""
    from datasets import Dataset

    from ..templates import IGNORE_INDEX, encode_conversation

    def enc(batch):
        out = {"input_ids": [], "labels": [], "length": [], "truncated": []}
        for raw in batch["messages"]:
            e = encode_conversation(tokenizer, template, json.loads(raw))
            cut = len(e.input_ids) > max_len
            out["input_ids"].append(e.input_ids[:max_len])
            out["labels"].append(e.labels[:max_len])
            out["length"].append(min(len(e.input_ids), max_len))
            out["truncated"].append(cut)
        return out

    ds = Dataset.from_dict({"messages": [json.dumps(c.messages, ensure_ascii=False) for c in convs],
                            "source": [c.source for c in convs]})
    ds = ds.map(enc, batched=True, num_proc=num_proc, remove_columns=["messages"], desc="rendering records")
    stats = SftStats(records=len(ds), truncated=sum(ds["truncated"]))
    first_cut = next((s for s, t in zip(ds["source"], ds["truncated"]) if t), None)
    keep = [i for i, (t, labels) in enumerate(zip(ds["truncated"], ds["labels"]))
            if not (t and truncation == "drop") and any(x != IGNORE_INDEX for x in labels)]
    stats.dropped = len(ds) - len(keep)
    if stats.dropped:
        ds = ds.select(keep)
    stats.tokens = sum(ds["length"])
    stats.trained_tokens = sum(sum(1 for x in labels if x != IGNORE_INDEX) for labels in ds["labels"])
    if stats.truncated:
        verb = "dropped" if truncation == "drop" else "truncated (their end-of-turn token is lost)"
        stats.warnings.append(f"{stats.truncated} of {stats.records} records are longer than {max_len} tokens "
                              f"and were {verb} (first: {first_cut}); raise --max_seq_length or use --truncation drop")
    return ds.remove_columns(["truncated", "source"]), stats


def encode_distilled(convs: Sequence[Conversation], tokenizer, template, max_len: int, num_proc: int | None = None):
    """Records to distil (adeptlm/train/kl.py): rendered whole with the chat template, no label trained,
    and a `distill` mask that is 1 at every position (cut at max_len). Returns (dataset, records cut)."""
    from datasets import Dataset

    from ..templates import IGNORE_INDEX, encode_conversation

    def enc(batch):
        out = {"input_ids": [], "labels": [], "length": [], "distill": [], "truncated": []}
        for raw in batch["messages"]:
            ids = encode_conversation(tokenizer, template, json.loads(raw)).input_ids
            out["truncated"].append(len(ids) > max_len)
            ids = ids[:max_len]
            out["input_ids"].append(ids)
            out["labels"].append([IGNORE_INDEX] * len(ids))
            out["length"].append(len(ids))
            out["distill"].append([1] * len(ids))
        return out

    ds = Dataset.from_dict({"messages": [json.dumps(c.messages, ensure_ascii=False) for c in convs]})
    ds = ds.map(enc, batched=True, num_proc=num_proc, remove_columns=["messages"], desc="rendering records to distil")
    return ds.remove_columns(["truncated"]), sum(ds["truncated"])
