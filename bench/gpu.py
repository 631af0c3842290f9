"""The GPU path measured: `adept sft` against TRL's SFTTrainer, LoRA in bf16, on real model shapes.

One prepared check for a short loan of a GPU machine (no network there): the models are randomly
initialised from the real configurations written below (speed and memory do not need trained
weights), the tokenizer is a word-level one built here with each configuration's vocabulary size,
and the data are random word sequences in the chat format, so nothing is downloaded. For each shape
and tool, one fresh process trains LoRA r64 (alpha 128) on the seven projections for --steps
optimizer steps (batch 8, records of 64-400 tokens, lr 1e-4, seed 42) and reports

- trained tokens per second (non-padding input tokens seen / train runtime),
- peak GPU memory (torch.cuda.max_memory_allocated, or peak RSS on CPU),
- MFU: 4 FLOPs per matmul weight per token (a frozen base: the forward pass and the backward pass to
  the inputs; the adapters' own cost left out) against this device's measured bf16 matmul peak,
- the losses of the first steps (the same random model and the same batches for every tool).

Tools: adept (`adept sft`, its GPU defaults), trl (SFTTrainer with its defaults on prompt/completion
records: completion-only loss, no packing), adept-flat (`adept sft --padding_free True`: each batch's
records in one row, no padding), and each with --use_liger_kernel where Liger-Kernel is importable
(adept-liger, adept-flat-liger, trl-liger). It writes one JSON (--out) and prints one table.

    python bench/gpu.py                                   # on a CUDA machine: the four shapes
    python bench/gpu.py --device cpu --tiny --steps 3     # the same code on CPU in seconds (a test runs it)

The machine has torch, transformers, peft, accelerate and safetensors; the rest travels as a
wheelhouse built here by `bench/gpu_wheelhouse.sh` (trl, datasets and their pure-Python
dependencies, gguf, adeptlm itself).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COMMON = dict(lr=1e-4, rank=64, alpha=128, dropout=0.0, max_len=512, batch=8, seed=42, records=256)

# Real configurations (the published config.json values that set the compute), randomly initialised.
SHAPES = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                         max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "gemma3-270m": dict(model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                        sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
                        tie_word_embeddings=True, rope_theta=1000000.0),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                         max_position_embeddings=32768, tie_word_embeddings=True, rms_norm_eps=1e-6),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                         max_position_embeddings=131072, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
}
TINY = {"tiny-llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                           max_position_embeddings=1024, tie_word_embeddings=True)}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_model_dir(shape: str, config: dict, work: Path, dtype: str) -> Path:
    """A randomly initialised model of this configuration with a word-level tokenizer of its
    vocabulary size and the chatml template, saved as a HF directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    out = work / shape
    if (out / "config.json").is_file():
        return out
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i + len(SPECIALS) for i in range(config["vocab_size"] - len(SPECIALS))})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])
    tok.chat_template = CHATML
    cfg = AutoConfig.for_model(**config, bos_token_id=None, eos_token_id=vocab["<|im_end|>"],
                               pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(COMMON["seed"])
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def records(vocab_size: int, n: int) -> list[dict]:
    """Instruction records of random words (the same for every tool): prompts of 16-100 words,
    replies of 40-300."""
    import random

    rng = random.Random(COMMON["seed"])
    top = vocab_size - len(SPECIALS)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(top)}" for _ in range(k))
    return [{"instruction": words(rng.randint(16, 100)), "input": "", "output": words(rng.randint(40, 300))}
            for _ in range(n)]


def device_peak_flops(device: str) -> float:
    """This device's measured matmul throughput (bf16 on CUDA, fp32 on CPU), FLOP/s."""
    import torch

    n = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def matmul_params(model_dir: Path) -> int:
    """Weights that take part in a matmul per token: every Linear of the body plus the LM head."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    body = sum(mod.weight.numel() for mod in m.model.modules() if isinstance(mod, torch.nn.Linear))
    return body + m.lm_head.weight.numel()


def child(tool: str, model_dir: Path, steps: int, device: str, work: Path) -> dict:
    """One training run in this (fresh) process; returns its figures."""
    import torch

    recs = records(json.loads((model_dir / "config.json").read_text())["vocab_size"], COMMON["records"])
    bf16 = device == "cuda"
    liger = tool.endswith("-liger")
    if tool.startswith("adept"):
        from adeptlm.cli import main
        from adeptlm.runrecord import read_run

        data = work / "train.json"
        data.write_text(json.dumps(recs), encoding="utf-8")
        out = work / f"{tool}-out"
        rc = main(["sft", "--model_name_or_path", str(model_dir), "--dataset_dir", str(data), "--output_dir", str(out),
                   "--max_seq_length", str(COMMON["max_len"]), "--per_device_train_batch_size", str(COMMON["batch"]),
                   "--max_steps", str(steps), "--learning_rate", str(COMMON["lr"]), "--lora_rank", str(COMMON["rank"]),
                   "--lora_alpha", str(COMMON["alpha"]), "--lora_dropout", str(COMMON["dropout"]),
                   "--trainable", ",".join(TARGETS), "--seed", str(COMMON["seed"]), "--logging_steps", "1",
                   "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir", "True",
                   "--template", "chatml", "--group_by_length", "False",
                   *(["--use_liger_kernel", "True"] if liger else []),
                   *(["--padding_free", "True"] if "-flat" in tool else []),
                   *(["--use_cpu", "True", "--bf16", "False"] if device == "cpu" else [])])
        if rc != 0:
            raise SystemExit(f"adept sft failed (exit {rc})")
        run = read_run(out)["metrics"]
        tokens, runtime = run["trained_tokens_seen"], run["train_runtime_s"]
        hist = [h["loss"] for h in run["loss_history"]]
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
        rows = [{"prompt": [{"role": "user", "content": r["instruction"]}],
                 "completion": [{"role": "assistant", "content": r["output"]}]} for r in recs]
        cfg = SFTConfig(output_dir=str(work / f"{tool}-out"), max_length=COMMON["max_len"],
                        per_device_train_batch_size=COMMON["batch"], max_steps=steps, learning_rate=COMMON["lr"],
                        seed=COMMON["seed"], bf16=bf16, use_cpu=device == "cpu", logging_steps=1,
                        save_strategy="no", report_to="none", include_num_input_tokens_seen="non_padding",
                        use_liger_kernel=liger)
        peft = LoraConfig(r=COMMON["rank"], lora_alpha=COMMON["alpha"], lora_dropout=COMMON["dropout"],
                          target_modules=TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=peft)
        t0 = time.time()
        trainer.train()
        runtime = time.time() - t0
        tokens = int(trainer.state.num_input_tokens_seen)
        hist = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tool": tool, "steps": len(hist), "tokens": tokens, "runtime_s": round(runtime, 3),
            "tokens_per_s": tokens / runtime, "peak_mb": round(peak, 1), "first_losses": hist[:3],
            "last_loss": hist[-1] if hist else None}


def run_child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"error": (proc.stdout[-1500:] + proc.stderr[-1500:]).strip()}
    return json.loads(line[7:])


def liger_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def table(report: dict) -> str:
    lines = ["| shape | tool | tokens/s | vs trl | peak MB | MFU | first losses |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for shape, runs in report["shapes"].items():
        trl = next((r["tokens_per_s"] for r in runs if r.get("tool") == "trl" and "tokens_per_s" in r), None)
        for r in runs:
            if "error" in r:
                lines.append(f"| {shape} | {r['tool']} | failed: {r['error'].splitlines()[-1][:60]} | | | | |")
                continue
            ratio = f"{r['tokens_per_s'] / trl:.2f}x" if trl else "n/a"
            lines.append(f"| {shape} | {r['tool']} | {r['tokens_per_s']:.0f} | {ratio} | {r['peak_mb']:.0f} | "
                         f"{100 * r['mfu']:.1f}% | {', '.join(f'{x:.3f}' for x in r['first_losses'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model of 512 words instead of the real shapes")
    ap.add_argument("--shapes", default=None, help="comma-separated subset of " + ", ".join(SHAPES))
    ap.add_argument("--tools", default=None, help="default: adept,adept-flat,trl and their -liger variants where importable")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--work", default=None, help="where models and runs go (default: a temporary directory)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gpu.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        tool, model_dir, work = args.child.split("|")
        print("RESULT " + json.dumps(child(tool, Path(model_dir), args.steps, device, Path(work))), flush=True)
        return
    shapes = TINY if args.tiny else {k: SHAPES[k] for k in (args.shapes.split(",") if args.shapes else SHAPES)}
    tools = args.tools.split(",") if args.tools else ["adept", "adept-flat", "trl"] + (
        ["adept-liger", "adept-flat-liger", "trl-liger"] if liger_available() else [])
    work = Path(args.work or tempfile.mkdtemp(prefix="adept-gpu-bench-"))
    peak = device_peak_flops(device)
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "device_peak_tflops": round(peak / 1e12, 2), "steps": args.steps, "common": COMMON,
              "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "peft", "trl")},
              "shapes": {}}
    for shape, config in shapes.items():
        model_dir = build_model_dir(shape, config, work, "bfloat16" if device == "cuda" else "float32")
        flops_per_token = 4 * matmul_params(model_dir)
        runs = []
        for tool in tools:
            (work / shape / tool).mkdir(parents=True, exist_ok=True)
            r = run_child(["--child", f"{tool}|{model_dir}|{work / shape / tool}", "--steps", str(args.steps),
                           "--device", device])
            r.setdefault("tool", tool)
            if "tokens_per_s" in r:
                r["mfu"] = r["tokens_per_s"] * flops_per_token / peak
            runs.append(r)
            print(f"   {shape} {tool}: " + (f"{r['tokens_per_s']:.0f} tokens/s" if "tokens_per_s" in r else "failed"),
                  flush=True)
        report["shapes"][shape] = runs
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
