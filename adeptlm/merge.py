"""LoRA adapters into full safetensors weights, one tensor at a time, in little memory.

The base checkpoint is never built as a model. Each base shard is read tensor by tensor, each
tensor is merged (W += scale * B @ A in fp32, cast back to the base dtype) and written straight
into the output shard, whose header is laid out before any data is read. Peak memory is therefore
the adapters plus a few copies of the largest tensor, not a shard and not the model.

Shards are read and written tensor by tensor with adeptlm.shards (why not the safetensors package: see there).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from .atomic import atomic_output
from .errors import AdeptError
from .models import adapter_base, resolve_model
from .runrecord import write_run
from .shards import Shard, ShardReader, ShardWriter, base_shards

ADAPTER_PREFIX = "base_model.model."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

# --------------------------------------------------------------------------- adapters

@dataclass
class Adapter:
    """One LoRA adapter: its low-rank pairs and its saved whole modules, keyed by base tensor name."""
    path: Path
    pairs: dict = field(default_factory=dict)       # "model.layers.0.self_attn.q_proj.weight" -> (A, B, scale, fan_in_fan_out, embedding)
    replaced: dict = field(default_factory=dict)    # "lm_head.weight" -> tensor (modules_to_save)


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches the end of the module's dotted name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(path: Path) -> Adapter:
    import torch

    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdeptError(f"{path}: not a LoRA adapter: adapter_config.json is missing")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdeptError(f"{cfg_path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdeptError(f"{cfg_path}: field 'peft_type' is {cfg.get('peft_type')!r}: only LoRA adapters merge")
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias terms")):
        if cfg.get(flag):
            raise AdeptError(f"{cfg_path}: field '{flag}' is set: {what} cannot be merged by adept merge; "
                             "merge with PEFT's merge_and_unload() instead")
    if cfg.get("target_parameters") or cfg.get("trainable_token_indices"):
        raise AdeptError(f"{cfg_path}: target_parameters / trainable_token_indices adapters are not supported")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)):
        raise AdeptError(f"{cfg_path}: fields 'r' and 'lora_alpha' must be numbers (r > 0)")

    if (path / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file
        state = load_file(str(path / "adapter_model.safetensors"))
    elif (path / "adapter_model.bin").is_file():
        state = torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise AdeptError(f"{path}: no adapter_model.safetensors or adapter_model.bin")

    adapter = Adapter(path)
    lora: dict[str, dict[str, object]] = {}
    for key, tensor in state.items():
        if not key.startswith(ADAPTER_PREFIX):
            raise AdeptError(f"{path}: tensor '{key}' does not start with '{ADAPTER_PREFIX}': not a PEFT "
                             "LoRA checkpoint of a causal LM")
        name = key[len(ADAPTER_PREFIX):]
        m = re.match(r"(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?$", name)
        if m:
            lora.setdefault(m.group(1), {})[m.group(2)] = tensor
        elif ".lora_" in name:
            raise AdeptError(f"{path}: tensor '{key}' is a LoRA part adept merge does not know")
        else:
            # Whole saved modules: modules_to_save copies, and the base weights PEFT saves alongside
            # a LoRA on an embedding or output layer (".base_layer", possibly resized).
            adapter.replaced[name.replace(".modules_to_save", "").replace(".base_layer", "")] = tensor
    for module, parts in lora.items():
        embedding = "lora_embedding_A" in parts
        a = parts.get("lora_embedding_A" if embedding else "lora_A")
        b = parts.get("lora_embedding_B" if embedding else "lora_B")
        if a is None or b is None:
            raise AdeptError(f"{path}: module '{module}' has only one of its LoRA A/B matrices")
        rank = _pattern_value(cfg.get("rank_pattern") or {}, module, r)
        alph = _pattern_value(cfg.get("alpha_pattern") or {}, module, alpha)
        scale = alph / math.sqrt(rank) if cfg.get("use_rslora") else alph / rank
        adapter.pairs[module + ".weight"] = (a, b, scale, bool(cfg.get("fan_in_fan_out")), embedding)
    return adapter


def delta(pair):
    """scale * B @ A in fp32 (a torch tensor) in the base weight's (out, in) layout, as PEFT defines it."""
    a, b, scale, fan_in_fan_out, embedding = pair
    d = b.float() @ a.float()
    if fan_in_fan_out or embedding:
        d = d.T
    return d * scale


# --------------------------------------------------------------------------- the merge

@dataclass
class MergePlan:
    base: Path
    adapters: list[Adapter]
    shards: list[Shard]
    config: dict
    tokenizer_dir: Path
    vocab_size: int | None            # rows of the merged embedding when an adapter resized it
    untie: bool                       # write lm_head separately (an adapter changed only one side)
    embed_name: str | None


def _vocab_check(base_rows: int | None, adapters: list[Adapter], embed_name: str | None, tok_len: int,
                 tokenizer_dir: Path) -> int | None:
    """Rows of the merged embedding; one clear line when tokenizer, adapter and base disagree."""
    rows = base_rows
    for ad in adapters:
        for name in (embed_name, "lm_head.weight"):
            if name and name in ad.replaced:
                saved = ad.replaced[name].shape[0]
                if rows is not None and saved != rows and saved != tok_len:
                    raise AdeptError(
                        f"vocabulary size mismatch: {ad.path} saves {name} with {saved} rows, the base has "
                        f"{rows} and the tokenizer in {tokenizer_dir} has {tok_len} tokens")
                rows = saved
            if name and name in ad.pairs:
                a, b, *_ = ad.pairs[name]
                lora_rows = a.shape[1] if ad.pairs[name][4] else b.shape[0]
                if rows is not None and lora_rows != rows:
                    raise AdeptError(f"vocabulary size mismatch: {ad.path} has a LoRA on {name} for {lora_rows} "
                                     f"rows but the embedding has {rows}")
    if rows is not None and tok_len > rows:
        raise AdeptError(f"vocabulary size mismatch: the tokenizer in {tokenizer_dir} has {tok_len} tokens but "
                         f"the merged embedding has only {rows} rows (resize the embedding while training, "
                         "e.g. with --modules_to_save embed_tokens,lm_head)")
    return rows if rows != base_rows else None


def plan_merge(base: Path, lora_paths: list[Path]) -> MergePlan:
    from transformers import AutoConfig, AutoTokenizer

    adapters = [load_adapter(p) for p in lora_paths]
    shards = base_shards(base)
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    tied = bool(getattr(AutoConfig.from_pretrained(base), "tie_word_embeddings", False))

    names: dict[str, tuple[str, list[int]]] = {}
    for shard in shards:
        reader = ShardReader(shard)
        names.update({n: reader.layout(n) for n in reader.names})
        reader.close()
    embed_name = next((n for n in names if n.endswith("embed_tokens.weight")), None)
    for ad in adapters:
        for name in list(ad.pairs) + list(ad.replaced):
            if name not in names and not (name == "lm_head.weight" and tied):
                raise AdeptError(f"{ad.path}: adapter changes '{name}', which the base model {base} does not have "
                                 "(was it trained on another base?)")
        for name, pair in ad.pairs.items():
            if name in names:
                shape = names[name][1]
                d_shape = (pair[0].shape[1], pair[1].shape[0]) if (pair[3] or pair[4]) else \
                    (pair[1].shape[0], pair[0].shape[1])
                if list(d_shape) != list(shape):
                    raise AdeptError(f"{ad.path}: LoRA on '{name}' has shape {list(d_shape)} but the base "
                                     f"tensor is {shape} (was it trained on another base?)")

    tokenizer_dir = next((p for p in reversed(lora_paths) if any((p / f).is_file() for f in TOKENIZER_FILES)), base)
    tok_len = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    base_rows = names[embed_name][1][0] if embed_name else None
    vocab = _vocab_check(base_rows, adapters, embed_name, tok_len, tokenizer_dir)
    if vocab:
        # A resized vocabulary must come with whole new tensors for every embedding-sized tensor.
        for name in (embed_name, "lm_head.weight"):
            last = next((ad.replaced[name] for ad in reversed(adapters) if name in ad.replaced), None)
            if name in names and (last is None or last.shape[0] != vocab):
                raise AdeptError(f"vocabulary size mismatch: the adapters resize the vocabulary to {vocab} rows "
                                 f"but leave {name} at {names[name][1][0]} rows")

    # A tied checkpoint stores only the embedding. If the adapters change the output head and the
    # embedding differently (e.g. a LoRA on lm_head alone), the merged model needs its own lm_head
    # or it would silently lose one side of the change when transformers ties them again on load.
    untie = False
    if tied and embed_name and "lm_head.weight" not in names:
        head = [(ad.pairs.get("lm_head.weight"), ad.replaced.get("lm_head.weight")) for ad in adapters]
        emb = [(ad.pairs.get(embed_name), ad.replaced.get(embed_name)) for ad in adapters]
        untie = any(h != (None, None) for h in head) and not all(
            _same(h, e) for h, e in zip(head, emb))
    return MergePlan(base, adapters, shards, config, tokenizer_dir, vocab, untie, embed_name)


def _same(head, emb) -> bool:
    """Whether an adapter changes lm_head exactly as it changes the tied embedding."""
    import torch

    (hp, hr), (ep, er) = head, emb
    if hp is not None or ep is not None:
        return False       # a LoRA on either side of a tied pair changes them differently
    if hr is None or er is None:
        return hr is None and er is None
    return hr.shape == er.shape and torch.equal(hr, er)


def merged_tensor(plan: MergePlan, name: str, tensor, source: str | None = None):
    """Apply every adapter in order to one base tensor (source: the adapter key to use, if different)."""
    key = source or name
    dtype = tensor.dtype
    for ad in plan.adapters:
        if key in ad.replaced:
            # modules_to_save replaces the tensor in the base dtype (the seed cast to fp16).
            tensor = ad.replaced[key].to(dtype)
        if key in ad.pairs:
            tensor = (tensor.float() + delta(ad.pairs[key])).to(dtype)
    return tensor


def merge(base_model: str | None, lora_models: list[str], output_dir: str | Path, overwrite: bool = False,
          progress: bool = True, alpha: float = 1.0) -> Path:
    """Merge LoRA adapters (applied in order) into the base model and write a full model directory.
    alpha scales every adapter's update (W0 + alpha * scale * B @ A, as PEFT's rescale_adapter_scale
    does): the interpolation between base and tuned weights that `adept select` chooses."""
    from transformers import AutoTokenizer

    started = time.time()
    lora_paths = [resolve_model(p) for p in lora_models]
    for p in lora_paths:
        if not (p / "adapter_config.json").is_file():
            raise AdeptError(f"{p}: --lora_model must be a LoRA adapter directory (adapter_config.json)")
    base = resolve_model(base_model) if base_model else adapter_base(lora_paths[0])
    if base is None or not (base / "config.json").is_file():
        raise AdeptError(f"{base}: --base_model must be a full model directory (config.json)")
    out = Path(output_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AdeptError(f"{out}: output directory exists and is not empty; pass --overwrite to replace it")

    if not 0.0 <= alpha <= 1.0:
        raise AdeptError(f"--alpha {alpha}: the scale of the adapters' update lies in [0, 1]")
    # α = 0 is the base itself: no LoRA update and no saved whole module (a modules_to_save copy would
    # otherwise stay in, and such an adapter cannot be scaled between 0 and 1)
    plan = plan_merge(base, lora_paths if alpha else [])
    if 0.0 < alpha < 1.0:
        if any(ad.replaced for ad in plan.adapters):
            raise AdeptError(f"--alpha {alpha}: an adapter saves whole modules (modules_to_save), which a scale "
                             "does not interpolate; merge it at --alpha 1")
        for ad in plan.adapters:
            ad.pairs = {k: (a, b, scale * alpha, *rest) for k, (a, b, scale, *rest) in ad.pairs.items()}
    # also removes what a killed merge into the same directory left behind; the merged shards take
    # about what the base's take
    with atomic_output(out, directory=True, need=sum(s.path.stat().st_size for s in plan.shards)) as tmp:
        weight_map, total = _write_shards(plan, tmp, progress)
        _write_metadata(plan, tmp, weight_map, total)
        AutoTokenizer.from_pretrained(plan.tokenizer_dir).save_pretrained(tmp)
        write_run(tmp, "merge", {"base_model": str(base), "lora_model": [str(p) for p in lora_paths], "alpha": alpha},
                  {"seconds": round(time.time() - started, 2), "tensors": len(weight_map),
                   "merged_lora_tensors": sum(len(a.pairs) for a in plan.adapters),
                   "replaced_tensors": sum(len(a.replaced) for a in plan.adapters), "untied_lm_head": plan.untie},
                  base_model=str(base), adapter=False)
    return out


def _write_shards(plan: MergePlan, tmp: Path, progress: bool) -> tuple[dict[str, str], int]:
    weight_map: dict[str, str] = {}
    total = 0
    bar = tqdm(total=len(plan.shards), desc="merging shards", unit="shard", disable=not progress)
    for shard in plan.shards:
        reader = ShardReader(shard)
        jobs = list(_shard_jobs(plan, reader))
        layout = [(name, st, shape) for name, _, st, shape in jobs]
        writer = ShardWriter(tmp / shard.out_name, layout)
        for name, src, _, _ in jobs:
            tensor = reader.get(src)
            writer.write(name, merged_tensor(plan, name, tensor))
            del tensor
            weight_map[name] = shard.out_name
        writer.close()
        reader.close()
        total += writer.total
        bar.update(1)
    bar.close()
    return weight_map, total


def _shard_jobs(plan: MergePlan, reader: ShardReader) -> Iterator[tuple[str, str, str, list[int]]]:
    """(output name, source name, dtype, shape) for each tensor this shard writes."""
    for name in reader.names:
        st, shape = reader.layout(name)
        if plan.vocab_size and name in (plan.embed_name, "lm_head.weight"):
            shape = [plan.vocab_size, *shape[1:]]
        yield name, name, st, shape
        if plan.untie and name == plan.embed_name:
            yield "lm_head.weight", name, st, shape


def _write_metadata(plan: MergePlan, tmp: Path, weight_map: dict[str, str], total: int) -> None:
    config = dict(plan.config)
    if plan.vocab_size:
        config["vocab_size"] = plan.vocab_size
        if isinstance(config.get("text_config"), dict):
            config["text_config"] = {**config["text_config"], "vocab_size": plan.vocab_size}
    if plan.untie:
        config["tie_word_embeddings"] = False
    (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if (plan.base / "generation_config.json").is_file():
        shutil.copy2(plan.base / "generation_config.json", tmp / "generation_config.json")
    if len(plan.shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
