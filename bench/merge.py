"""LoRA merge: `adept merge` against PEFT's merge_and_unload() + save_pretrained(), side by side.

1. The embedded SmolLM2-135M-Instruct (fp32, one model.safetensors) with a LoRA adapter of rank 64
   on the 7 projections plus modules_to_save embed_tokens/lm_head (the seed's SFT set-up). Each
   tool runs in a fresh child process, alternating; wall time and peak RSS (from wait4) per run,
   medians over --repeats. The merged weights of both are compared tensor by tensor.
2. A synthetic sharded base (Llama layout, fp32, --shards shards of about --shard_mb MB each,
   random weights written shard by shard) with a rank-16 adapter on q/k/v/o: the peak RSS of
   `adept merge` against 1.25 x (largest shard + adapter). PEFT is run on it too for contrast.

    python bench/merge.py [--repeats 3] [--shards 4] [--shard_mb 1000] [--skip_synthetic]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed_child(tool: str, base: Path, adapter: Path, out: Path) -> dict:
    """One merge in a fresh process: its wall time and peak RSS.

    The peak is the child's own VmHWM, read at exit: ru_maxrss from wait4 would include the RSS this
    (large) parent had when it forked the child, which Linux carries across exec."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", tool, str(base), str(adapter), str(out)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tool} merge failed:\n{proc.stderr[-3000:]}")
    hwm = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("VMHWM ")][-1]
    return {"seconds": wall, "peak_rss_mb": int(hwm) / 1024}


def child_main(tool: str, base: str, adapter: str, out: str) -> None:
    import atexit

    def report() -> None:
        hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
        sys.stderr.write(f"\nVMHWM {hwm}\n")
    atexit.register(report)
    if tool == "adept":
        from adeptlm.cli import main as adept_main
        if adept_main(["merge", "--base_model", base, "--lora_model", adapter, "--output_dir", out]) != 0:
            raise SystemExit(1)
    else:
        peft_merge_main(base, adapter, out)


def peft_merge_main(base: str, adapter: str, out: str) -> None:
    """The PEFT path a user would write: load, apply, merge_and_unload, save_pretrained."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter if Path(adapter, "tokenizer_config.json").is_file() else base) \
        .save_pretrained(out)


def make_adapter(base: Path, out: Path, rank: int, targets: list[str], modules_to_save: list[str] | None) -> None:
    """A random (not zero) LoRA adapter for base, built on the meta device so no base weights load."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(base)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                            modules_to_save=modules_to_save, init_lora_weights=False,
                                            ensure_weight_tying=bool(modules_to_save)))
    torch.manual_seed(0)
    state = {}
    from peft.utils import get_peft_model_state_dict
    for key, meta in get_peft_model_state_dict(peft).items():
        state[key] = torch.randn(meta.shape) * 0.02
    # Tied embeddings: the saved copies of embed_tokens and lm_head are one tensor, as in training.
    head, emb = "base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.weight"
    if head in state and emb in state:
        state[head] = state[emb].clone()
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft.peft_config["default"].base_model_name_or_path = str(base)
    peft.peft_config["default"].save_pretrained(str(out))


def make_synthetic_base(out: Path, shards: int, shard_mb: int, tokenizer_from: Path) -> None:
    """A Llama-layout fp32 checkpoint in `shards` safetensors files, written one file at a time."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    hidden, inter, vocab = 2048, 5632, 49152
    per_layer = (2 * hidden * hidden + 2 * hidden * 512 + 3 * hidden * inter + 2 * hidden) * 4
    layers_per_shard = max(1, round(shard_mb * 2 ** 20 / per_layer))
    layers = layers_per_shard * shards
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=True)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(out)
    weight_map, total = {}, 0
    g = torch.Generator().manual_seed(0)
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for i in range(s * layers_per_shard, (s + 1) * layers_per_shard):
            p = f"model.layers.{i}."
            shapes = {"self_attn.q_proj.weight": (hidden, hidden), "self_attn.k_proj.weight": (512, hidden),
                      "self_attn.v_proj.weight": (512, hidden), "self_attn.o_proj.weight": (hidden, hidden),
                      "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
                      "mlp.down_proj.weight": (hidden, inter), "input_layernorm.weight": (hidden,),
                      "post_attention_layernorm.weight": (hidden,)}
            for k, shape in shapes.items():
                tensors[p + k] = (torch.rand(shape, generator=g) - 0.5) * 0.04
        if s == 0:
            tensors["model.embed_tokens.weight"] = (torch.rand((vocab, hidden), generator=g) - 0.5) * 0.04
        if s == shards - 1:
            tensors["model.norm.weight"] = torch.ones(hidden)
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(t.numel() * 4 for t in tensors.values())
        del tensors
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(out)


def same_weights(a: Path, b: Path) -> float:
    """Largest absolute difference between two merged models' tensors (names must match)."""
    from safetensors import safe_open

    def tensors(d: Path) -> dict[str, tuple[Path, str]]:
        return {k: (f, k) for f in d.glob("*.safetensors") for k in safe_open(str(f), "pt").keys()}
    ta, tb = tensors(a), tensors(b)
    # transformers drops lm_head from a tied checkpoint; compare the names both wrote.
    worst = 0.0
    for k in set(ta) & set(tb):
        with safe_open(str(ta[k][0]), "pt") as fa, safe_open(str(tb[k][0]), "pt") as fb:
            worst = max(worst, (fa.get_tensor(k).float() - fb.get_tensor(k).float()).abs().max().item())
    missing = set(ta) ^ set(tb)
    if missing:
        print(f"  tensors only one side wrote: {sorted(missing)}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard_mb", type=int, default=1000)
    ap.add_argument("--skip_synthetic", action="store_true")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    from adeptlm.models import resolve_model

    work = Path(args.work or tempfile.mkdtemp(prefix="adept-bench-merge-"))
    base = resolve_model(None)
    adapter = work / "adapter"
    make_adapter(base, adapter, 64, PROJ, ["embed_tokens", "lm_head"])
    adapter_mb = (adapter / "adapter_model.safetensors").stat().st_size / 2 ** 20
    runs: dict[str, list[dict]] = {"adept": [], "peft": []}
    for r in range(args.repeats):
        for tool in ("adept", "peft"):
            out = work / f"{tool}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            runs[tool].append(timed_child(tool, base, adapter, out))
            print(f"  {tool} run {r}: {runs[tool][-1]['seconds']:.2f} s, {runs[tool][-1]['peak_rss_mb']:.0f} MB",
                  flush=True)
    med = {t: {k: statistics.median(x[k] for x in v) for k in ("seconds", "peak_rss_mb")} for t, v in runs.items()}
    diff = same_weights(work / "adept-0", work / "peft-0")
    print(f"\nembedded model + r64 adapter ({adapter_mb:.0f} MB), median of {args.repeats}:")
    for t in ("adept", "peft"):
        print(f"  {t:6s} {med[t]['seconds']:7.2f} s   peak RSS {med[t]['peak_rss_mb']:7.0f} MB")
    print(f"  time ratio peft/adept {med['peft']['seconds'] / med['adept']['seconds']:.2f}x, "
          f"RSS ratio {med['peft']['peak_rss_mb'] / med['adept']['peak_rss_mb']:.2f}x; "
          f"max |adept - peft| over merged tensors {diff:.3g}")

    if args.skip_synthetic:
        return
    syn = work / "synthetic"
    print(f"\nwriting a synthetic base: {args.shards} shards of about {args.shard_mb} MB ...", flush=True)
    make_synthetic_base(syn, args.shards, args.shard_mb, base)
    syn_adapter = work / "syn-adapter"
    make_adapter(syn, syn_adapter, 16, ["q_proj", "k_proj", "v_proj", "o_proj"], None)
    largest = max(p.stat().st_size for p in syn.glob("model-*.safetensors")) / 2 ** 20
    ad_mb = (syn_adapter / "adapter_model.safetensors").stat().st_size / 2 ** 20
    ours = timed_child("adept", syn, syn_adapter, work / "syn-adept")
    theirs = timed_child("peft", syn, syn_adapter, work / "syn-peft")
    bound = 1.25 * (largest + ad_mb)
    print(f"synthetic base: largest shard {largest:.0f} MB, adapter {ad_mb:.1f} MB, bound 1.25 x (shard + adapter) "
          f"= {bound:.0f} MB")
    print(f"  adept  {ours['seconds']:7.2f} s   peak RSS {ours['peak_rss_mb']:7.0f} MB  "
          f"({'within' if ours['peak_rss_mb'] <= bound else 'OVER'} the bound)")
    print(f"  peft   {theirs['seconds']:7.2f} s   peak RSS {theirs['peak_rss_mb']:7.0f} MB")
    print(f"  max |adept - peft| over merged tensors {same_weights(work / 'syn-adept', work / 'syn-peft'):.3g}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
    else:
        main()
