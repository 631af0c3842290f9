"""The model families of adept's export matrix as tiny random models: a config of the family's own
model type from transformers, and a tokenizer of the family's kind trained here on a few sentences
(no downloads). Used by tests/unit/test_families.py and bench/export.py."""

from __future__ import annotations

from dataclasses import dataclass, field

# Llama 3.1's rope scaling with an original context of 64 tokens, so that the tiny model's four
# rotary frequencies fall in all three bands (kept, interpolated, slowed by the factor).
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@dataclass(frozen=True)
class TinyFamily:
    model_type: str
    tokenizer: str              # "llama-bpe", "qwen2" (byte-level BPE splits), "spm" or "spm-prefix"
    tie: bool
    config: dict = field(default_factory=dict)


TINY_FAMILIES = {
    "llama3": TinyFamily("llama", "llama-bpe", tie=False),
    "llama3.1": TinyFamily("llama", "llama-bpe", tie=False, config={"rope_parameters": LLAMA3_ROPE}),
    "llama3.2": TinyFamily("llama", "llama-bpe", tie=True, config={"rope_parameters": LLAMA3_ROPE}),
    "llama2": TinyFamily("llama", "spm-prefix", tie=False),
    "mistral": TinyFamily("mistral", "spm-prefix", tie=False, config={"sliding_window": None}),
    "qwen2.5": TinyFamily("qwen2", "qwen2", tie=True),
    "qwen3": TinyFamily("qwen3", "qwen2", tie=True, config={"head_dim": 16}),
    "gemma3": TinyFamily("gemma3_text", "spm", tie=True,
                         config={"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 64}),
}


def build_family_tokenizer(kind: str):
    from adeptlm.templates import CHATML, GEMMA
    from conftest import build_spm_tokenizer, build_tiny_tokenizer

    if kind in ("spm", "spm-prefix"):
        return build_spm_tokenizer(kind == "spm-prefix", GEMMA)
    return build_tiny_tokenizer(CHATML, split=kind)


def build_family(name: str, seed: int = 0, **overrides):
    """(model, tokenizer) of the family NAME: 2 layers, hidden size 32, random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fam = TINY_FAMILIES[name]
    tok = build_family_tokenizer(fam.tokenizer)
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(fam.model_type, vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=256, tie_word_embeddings=fam.tie, initializer_range=0.2,
                               **{**fam.config, **overrides})
    return AutoModelForCausalLM.from_config(cfg), tok
