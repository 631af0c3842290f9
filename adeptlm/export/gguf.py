"""Write a Hugging Face model directory as a GGUF file for llama.cpp.

The gguf package supplies the writer, the tensor-name maps, the quantizers (f16, bf16, q8_0,
q4_0, q4_1, q5_0, q5_1) and the metadata keys; llama.cpp's own quantizer (through
llama-cpp-python) makes the k-quants from an f16 file we write first. What is written here by
hand is what neither library does for us: reading the checkpoint one tensor at a time (so memory
stays near one tensor), the per-architecture weight transforms llama.cpp expects, the choice
of pre-tokenizer, which llama.cpp needs named and which a wrong guess silently breaks, and the
SentencePiece-style vocabulary (Gemma, Llama-2, Mistral) written from tokenizer.json alone: its
scores come from the merge ranks, so llama.cpp's merge order is transformers' (gguf-py's
LlamaHfVocab, which llama.cpp's converter uses when there is no tokenizer.model, gives every token
-1000 in gguf 0.19, and the tiny test tokenizer's emoji then tokenize differently).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_output
from ..data.tokenize import start_of_text_ids
from ..errors import AdeptError
from ..shards import ShardReader, base_shards
from ..models import resolve_model

# The gguf package quantizes these itself; k-quants go through llama.cpp's quantizer.
DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
OUTTYPES = DIRECT_TYPES + K_QUANTS

# HF architecture -> llama.cpp architecture. Mistral's HF checkpoints are Llama's graph (llama.cpp's
# converter writes them as "llama" too); Qwen3 is Qwen2 without the q/k/v biases, with an RMSNorm on
# each head's queries and keys.
ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
         "Qwen3ForCausalLM": "qwen3", "Gemma3ForCausalLM": "gemma3", "Gemma3ForConditionalGeneration": "gemma3"}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str       # the HF class in config.json


# What `adept export gguf --help` lists (docs/guide/export.md's family list says what each needs). Each row but SmolLM2 is
# tested on a tiny random model in tests/unit/test_families.py (train, merge, export f16 and q8_0,
# llama.cpp tokens and logits); SmolLM2 is the embedded model, exported and checked in tests/e2e/.
FAMILIES = (
    Family("Llama-3", "LlamaForCausalLM"),
    Family("Llama-3.1 / 3.2", "LlamaForCausalLM"),
    Family("Llama-2 / Chinese-LLaMA-2", "LlamaForCausalLM"),
    Family("Mistral", "MistralForCausalLM"),
    Family("Qwen2 / Qwen2.5", "Qwen2ForCausalLM"),
    Family("Qwen3", "Qwen3ForCausalLM"),
    Family("Gemma 3", "Gemma3ForCausalLM"),
    Family("SmolLM2", "LlamaForCausalLM"),
)


def families_text() -> str:
    return "; ".join(f"{f.name} ({f.architecture})" for f in FAMILIES)

# Pre-tokenizer regexes as they appear in tokenizer.json, and the name llama.cpp gives each.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass
class ExportResult:
    path: Path
    outtype: str
    arch: str
    tensors: int
    pre: str
    bytes: int


def _ftype(gguf, outtype: str) -> int:
    name = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16"}.get(outtype, f"MOSTLY_{outtype.upper()}")
    return int(getattr(gguf.LlamaFileType, name))


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer, read from its structure."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    splits = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"          # GPT-2's split after one-digit splitting
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        if splits == [LLAMA3_SPLIT]:
            return "llama-bpe"
        if splits == [QWEN2_SPLIT]:
            return "qwen2"
    raise AdeptError(f"tokenizer.json: pre_tokenizer {kinds} is not one adept export knows; name llama.cpp's "
                     "pre-tokenizer type with --pretokenizer (e.g. llama-bpe, qwen2, gpt-2, smollm)")


def tokenizer_kind(tj: dict) -> str:
    """"gpt2" for byte-level BPE (Llama-3, Qwen2, SmolLM, GPT-2), "llama" for SentencePiece-style BPE
    (byte fallback, "▁" for a space: Gemma, Llama-2, Mistral), the two tokenizer models llama.cpp has."""
    model = tj.get("model") or {}
    decoder = tj.get("decoder") or {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    kinds = {d.get("type") for d in steps}
    if model.get("type") == "BPE" and not model.get("byte_fallback") and kinds == {"ByteLevel"}:
        return "gpt2"
    if model.get("type") == "BPE" and model.get("byte_fallback") and "ByteFallback" in kinds:
        return "llama"
    raise AdeptError(f"tokenizer.json: a {model.get('type')} model with decoder {sorted(k for k in kinds if k)} is "
                     "not exported; supported: byte-level BPE (Llama-3, Qwen2, SmolLM, GPT-2) and SentencePiece-style "
                     "BPE with byte fallback (Gemma, Llama-2, Mistral)")


def add_space_prefix(tj: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text (Llama-2's dummy prefix; Gemma has none)."""
    def steps(node: dict | None) -> list[dict]:
        node = node or {}
        return node.get("normalizers") or node.get("pretokenizers") or [node]

    for step in steps(tj.get("normalizer")):
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
    for step in steps(tj.get("pre_tokenizer")):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") in ("always", "first") and step.get("add_prefix_space", True)
    return False


def _vocab(tj: dict, n_vocab: int, gguf, kind: str) -> tuple[list[str], list[int], list, list[str]]:
    """Tokens (as tokenizer.json spells them), token types, scores (SentencePiece style only) and merges.

    SentencePiece-style tokenizers: llama.cpp merges any adjacent pair whose concatenation is a
    token, best score first, where transformers applies tokenizer.json's merges in rank order. A
    token's score is therefore minus the rank of the first merge that makes it, so both pick the
    same pair; byte tokens (<0xNN>) are typed BYTE, as llama.cpp's byte fallback needs.
    """
    model = tj.get("model", {})
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    by_id = {i: t for t, i in vocab.items()}
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    made_at: dict[str, int] = {}
    if kind == "llama":
        for rank, (a, b) in enumerate(pairs):
            made_at.setdefault(a + b, rank)
    unk = model.get("unk_token")
    T = gguf.TokenType
    tokens, types, scores = [], [], []
    for i in range(n_vocab):
        if i in added:
            tok = added[i]["content"]
            typ = T.CONTROL if added[i].get("special") else T.USER_DEFINED
        elif i in by_id:
            tok, typ = by_id[i], T.NORMAL
        else:                        # embedding rows beyond the tokenizer (padding to a round size)
            tok, typ = f"[PAD{i}]", T.UNUSED
        if kind == "llama" and tok == unk:
            typ = T.UNKNOWN
        elif kind == "llama" and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            typ = T.BYTE
        tokens.append(tok)
        types.append(int(typ))
        if tok in made_at:
            scores.append(-float(made_at[tok]))
        else:  # a character, a special or byte token: 0; a token no merge makes: last, as rarely as llama.cpp allows
            scores.append(-1e9 if typ == T.NORMAL and len(tok) > 1 else 0.0)
    if kind == "llama":
        return tokens, types, scores, []
    return tokens, types, [], [" ".join(p) for p in pairs]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows into the interleaved order llama.cpp's llama rope expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _rope(arch: str, cfg) -> dict:
    """The rope parameters llama.cpp's graph uses (Gemma 3: those of its global layers)."""
    rope = dict(getattr(cfg, "rope_parameters", None) or {"rope_theta": getattr(cfg, "rope_theta", 10000.0)})
    if arch == "gemma3" and "full_attention" in rope:
        rope = dict(rope["full_attention"])
    return rope


def check_supported(config_path: Path, arch: str, cfg) -> None:
    """Everything the file could get wrong, refused before a byte is written: one line naming the setting
    and what is supported."""
    rope = _rope(arch, cfg)
    kind = rope.get("rope_type", "default")
    where = f"{config_path}: "
    if kind not in ROPE_TYPES:
        raise AdeptError(where + f"rope type {kind!r} is not exported; supported: {', '.join(ROPE_TYPES)} "
                         "(for others try --converter PATH/convert_hf_to_gguf.py)")
    if kind == "llama3" and arch != "llama":
        raise AdeptError(where + f"llama3 rope scaling on {arch} is not exported; it is on llama only")
    head_dim = _head_dim(cfg)
    if arch == "gemma3":
        local = (getattr(cfg, "rope_parameters", None) or {}).get("sliding_attention", {})
        if local.get("rope_theta", 10000.0) != 10000.0 or local.get("rope_type", "default") != "default":
            raise AdeptError(where + "gemma3 local rope other than plain theta 10000 is not representable in llama.cpp")
        if getattr(cfg, "query_pre_attn_scalar", head_dim) != head_dim:
            raise AdeptError(where + f"query_pre_attn_scalar {cfg.query_pre_attn_scalar} differs from head_dim "
                             f"{head_dim}; llama.cpp's gemma3 scales attention by 1/sqrt(head_dim)")
    if arch in ("qwen2", "qwen3") and getattr(cfg, "use_sliding_window", False):
        raise AdeptError(where + "use_sliding_window true is not exported (llama.cpp's qwen graphs attend over "
                         "the whole context); supported: use_sliding_window false")
    if arch == "llama" and (getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False)):
        raise AdeptError(where + "attention_bias/mlp_bias on a llama-type model is not exported; supported: "
                         "no biases")


def context_length(arch: str, cfg) -> int:
    """The training context the file states. Mistral v0.1 attends over a 4096-token sliding window that
    llama.cpp's llama graph does not have: stating the window as the context keeps every position the
    file claims to support exact (llama.cpp warns when asked for more)."""
    window = getattr(cfg, "sliding_window", None)
    if arch == "llama" and window and window < cfg.max_position_embeddings:
        return int(window)
    return int(cfg.max_position_embeddings)


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Llama 3.1's frequency-dependent rope scaling as llama.cpp takes it: one divisor per rotary
    frequency (the rope_freqs tensor). Long wavelengths are slowed by `factor`, short ones kept, and the
    band between is interpolated, as Meta defines it and transformers computes it."""
    theta = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))
    return out.astype(np.float32)


def _hparams(writer, gguf, arch: str, cfg, n_vocab: int) -> None:
    rope = _rope(arch, cfg)
    n_head = cfg.num_attention_heads
    head_dim = _head_dim(cfg)
    writer.add_context_length(context_length(arch, cfg))
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or n_head)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(n_vocab)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // n_head or arch in ("gemma3", "qwen3"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3" and getattr(cfg, "sliding_window", None):
        writer.add_sliding_window(cfg.sliding_window)


def _tensor_type(gguf, outtype: str, name: str, shape: tuple[int, ...]):
    """The GGML type one tensor is stored in."""
    Q = gguf.GGMLQuantizationType
    if len(shape) < 2 or outtype == "f32" or name.endswith("_norm.weight"):
        return Q.F32
    if outtype in ("f16", "bf16", "q8_0"):
        want = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    else:
        want = getattr(Q, outtype.upper())
        # 4/5-bit embeddings (also the tied output head) cost far more accuracy than they save.
        if name in ("token_embd.weight", "output.weight"):
            want = Q.Q8_0
    block = gguf.GGML_QUANT_SIZES[want][0]
    return want if shape[-1] % block == 0 else Q.F16


# bytes per weight of each direct output type; the others are quantised from an f16 scratch file that
# sits beside the result until it is done
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}


def _bytes_needed(model: str, outtype: str, direct) -> int | None:
    from ..shards import parameter_count

    try:
        n = parameter_count(resolve_model(model))
    except (AdeptError, OSError):
        return None                 # the writer reports the model's own problem
    per = BYTES_PER_WEIGHT[outtype] if outtype in direct and outtype in BYTES_PER_WEIGHT else 2.0 + 1.0
    return int(n * per)


def export_gguf(model: str, output: str | Path, outtype: str = "f16", pretokenizer: str | None = None,
                progress: bool = True, converter: str | Path | None = None) -> ExportResult:
    """Write MODEL as a GGUF file (atomically: a temporary sibling, renamed when complete). With
    `converter` (llama.cpp's convert_hf_to_gguf.py), that script writes it instead."""
    if outtype not in OUTTYPES:
        raise AdeptError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    out = Path(output).expanduser()
    if converter is None:
        write, direct = _write, DIRECT_TYPES
    else:
        from .converter import CONVERTER_TYPES, check_script
        if pretokenizer:
            raise AdeptError("--pretokenizer is adept's own exporter's option; llama.cpp's converter names "
                             "the pre-tokenizer itself")
        write, direct = _converted(check_script(Path(converter).expanduser())), CONVERTER_TYPES
    # also removes what a killed export of the same file left behind
    with atomic_output(out, need=_bytes_needed(model, outtype, direct)) as tmp:
        if outtype not in direct:
            # the scratch name matches the temporaries atomic_output removes after a kill
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.f16-{os.getpid()}-") as scratch:
                f16 = Path(scratch) / "model-f16.gguf"
                result = write(model, f16, "f16", pretokenizer, progress, label=f"{out.name} (f16 first)")
                _llama_quantize(f16, tmp, outtype)
        else:
            result = write(model, tmp, outtype, pretokenizer, progress, label=out.name)
    result.path, result.outtype, result.bytes = out, outtype, out.stat().st_size
    return result


def _converted(script: Path):
    """A writer with _write's signature that has llama.cpp's converter write the file."""
    def write(model: str, path: Path, outtype: str, pretokenizer: str | None, progress: bool,
              label: str = "") -> ExportResult:
        import gguf

        from .converter import run_converter

        run_converter(script, resolve_model(model), path, outtype)
        reader = gguf.GGUFReader(str(path))
        pre = reader.fields.get("tokenizer.ggml.pre")
        result = ExportResult(path, outtype, reader.fields["general.architecture"].contents(), len(reader.tensors),
                              pre.contents() if pre else "", path.stat().st_size)
        del reader               # it maps the file, which is renamed next
        return result

    return write


def _llama_quantize(src: Path, dst: Path, outtype: str) -> None:
    try:
        import llama_cpp
    except ImportError:
        raise AdeptError(f"--outtype {outtype} needs llama.cpp's quantizer: pip install llama-cpp-python") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}")
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise AdeptError(f"llama.cpp could not quantize {src} to {outtype}")


def _write(model: str, path: Path, outtype: str, pretokenizer: str | None, progress: bool,
           label: str = "") -> ExportResult:
    import gguf
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from ..templates import get_template

    model_dir = resolve_model(model)
    if (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
        raise AdeptError(f"{model_dir}: is a LoRA adapter; merge it first: adept merge --lora_model {model_dir} "
                         "--output_dir MERGED, then export MERGED")
    raw_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    archs = raw_config.get("architectures") or []
    arch = next((ARCHS[a] for a in archs if a in ARCHS), None)
    if arch is None:
        raise AdeptError(f"{model_dir}/config.json: architecture {archs} is not exported; supported: "
                         f"{', '.join(sorted(set(ARCHS)))}; for others use --converter PATH/convert_hf_to_gguf.py")
    cfg = AutoConfig.from_pretrained(model_dir)
    cfg = getattr(cfg, "text_config", None) or cfg
    check_supported(model_dir / "config.json", arch, cfg)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise AdeptError(f"{model_dir}: tokenizer.json is missing: adept export needs a fast tokenizer")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    n_vocab = cfg.vocab_size
    kind = tokenizer_kind(tj)
    tokens, types, scores, merges = _vocab(tj, n_vocab, gguf, kind)
    # llama.cpp's SentencePiece tokenizer has one pre-tokenizer ("default"); byte-level BPE needs it named
    pre = pretokenizer or (pre_tokenizer_name(tj) if kind == "gpt2" else "default")

    gg_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3,
               "gemma3": gguf.MODEL_ARCH.GEMMA3}[arch]
    tmap = gguf.get_tensor_name_map(gg_arch, cfg.num_hidden_layers)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gg_arch])
    writer.add_name(cfg.name_or_path and Path(str(cfg.name_or_path)).name or model_dir.name)
    _hparams(writer, gguf, arch, cfg, n_vocab)
    writer.add_file_type(_ftype(gguf, outtype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(add_space_prefix(tj))
    else:
        writer.add_token_merges(merges)
    for role in ("bos", "eos", "unk", "pad"):
        tid = getattr(tok, f"{role}_token_id")
        if tid is not None:
            getattr(writer, f"add_{role}_token_id")(tid)
    writer.add_add_bos_token(bool(start_of_text_ids(tok)))
    writer.add_add_eos_token(bool(tok.eos_token_id is not None and tok("a")["input_ids"][-1:] == [tok.eos_token_id]))
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)
        eot = get_template(tok, "auto").eot
        eot_id = tok.convert_tokens_to_ids(eot) if eot else None
        if isinstance(eot_id, int) and eot_id != tok.unk_token_id:
            writer.add_eot_token_id(eot_id)

    # Plan every tensor (name, shape, type) before reading any data, then stream them in order.
    shards = base_shards(model_dir)
    plan = []
    for shard in shards:
        reader = ShardReader(shard)
        for name in reader.names:
            if "vision_tower" in name or "multi_modal_projector" in name:
                continue                       # the image side of multimodal Gemma 3 checkpoints
            hf = name.replace("model.language_model.", "model.").replace("language_model.model.", "model.")
            if hf == "lm_head.weight" and getattr(cfg, "tie_word_embeddings", False):
                continue
            new = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise AdeptError(f"{shard.path}: tensor '{name}' has no llama.cpp name for {arch}")
            st_dtype, shape = reader.layout(name)
            plan.append((shard, name, new, tuple(shape), _tensor_type(gguf, outtype, new, tuple(shape))))
        reader.close()
    rope = _rope(arch, cfg)
    if rope.get("rope_type") == "llama3":        # computed, not read: shard None
        head_dim = _head_dim(cfg)
        plan.append((None, llama3_rope_factors(rope, head_dim), "rope_freqs.weight", (head_dim // 2,),
                     gguf.GGMLQuantizationType.F32))
    for _, _, new, shape, qtype in plan:
        np_shape = gguf.quant_shape_to_byte_shape(shape, qtype) if qtype not in (
            gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else shape
        nbytes = int(np.prod(np_shape)) * (4 if qtype == gguf.GGMLQuantizationType.F32 else
                                           2 if qtype == gguf.GGMLQuantizationType.F16 else 1)
        writer.add_tensor_info(new, np_shape, np.float32 if qtype == gguf.GGMLQuantizationType.F32 else
                               np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.uint8, nbytes,
                               raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # The vocabulary is in the file now: free it (and the tokenizer) before the tensors stream through.
    writer.kv_data = [{} for _ in writer.kv_data]
    del tok, tj, tokens, types, scores, merges

    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    readers: dict[Path, ShardReader] = {}
    for shard, name, new, shape, qtype in tqdm(plan, desc=f"writing {label or path.name}", unit="tensor",
                                               disable=not progress):
        if shard is None:
            writer.write_tensor_data(name)
            continue
        if shard.path not in readers:
            for r in readers.values():
                r.close()
            readers = {shard.path: ShardReader(shard)}
        data = readers[shard.path].get(name).to(torch.float32).numpy()
        if arch == "llama" and new.endswith("attn_q.weight"):
            data = _permute(data, n_head)
        elif arch == "llama" and new.endswith("attn_k.weight"):
            data = _permute(data, n_kv)
        elif arch == "gemma3" and new.endswith("norm.weight"):
            data = data + 1.0              # Gemma's RMSNorm multiplies by (1 + weight)
        writer.write_tensor_data(gguf.quants.quantize(np.ascontiguousarray(data), qtype))
    for r in readers.values():
        r.close()
    writer.close()
    return ExportResult(path, outtype, arch, len(plan), pre, path.stat().st_size)
