"""SFT speed: `adept sft` against TRL's SFTTrainer on the same model, data and LoRA, side by side.

Setting (issue 3): the embedded SmolLM2-135M-Instruct (or `--model gemma3-270m`, issue 22 item 2,
in the gemma turn format adeptlm gives it, which TRL reads from the same tokenizer), the first N
records (default 256) of shared/data/instructions/alpaca_zh_demo.json, LoRA r=64 alpha=128
dropout 0.05 on the 7 projections, max length 512, batch 4, 1 epoch, fp32, lr 1e-4 cosine, seed 42. Each run is a fresh
child process (so peak RSS is its own); runs alternate between tools to share the machine's noise.

  - adept:       `adept sft` with its defaults (length-grouped batches, no gradient checkpointing)
  - adept-bf16mm: the same with --cpu_matmul_precision bf16 (bfloat16 inputs, fp32 accumulation in
                 oneDNN's matrix products; needs AVX512_BF16 or AMX)
  - trl:         TRL SFTTrainer with its defaults (completion-only loss on prompt/completion data,
                 gradient checkpointing on, no packing)
  - trl-packing: the same with packing=True

Reported: trained (non-padding) tokens per second = non-padding input tokens seen / train runtime,
peak RSS, the mean train loss over the epoch and the mean of the last 5 logged losses, the held-out
loss of the final adapter (the next 64 records after the trained ones, same tokens and mask for every
tool: adeptlm's rendering, which equals TRL's except that TRL also trains the newline after
<|im_end|>; token-mean cross-entropy over the reply tokens), and model
FLOP utilisation against the machine's measured fp32 matmul peak (LoRA with a frozen base costs
about 4 FLOPs per matmul weight per token: forward, and backward to the inputs only).

    python bench/train.py [--records 256] [--repeats 1] [--tools adept,trl,trl-packing] [--seed 42]
                          [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_zh_demo.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COMMON = dict(lr=1e-4, rank=64, alpha=128, dropout=0.05, max_len=512, batch=4, seed=42)
MODEL = {"name": None}  # a known model name (--model); None is the embedded default


HELDOUT = 64


def heldout_loss(model, records: list[dict], work: Path) -> float:
    """Token-mean cross-entropy of the replies of `records`, rendered the same way for every tool."""
    import torch

    from adeptlm.data.instructions import read_instructions
    from adeptlm.data.tokenize import encode_records
    from adeptlm.models import load_tokenizer, resolve_model
    from adeptlm.templates import get_template

    tok = load_tokenizer(resolve_model(MODEL["name"]))
    path = work / "heldout.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    ds, _ = encode_records(read_instructions(path)[1], tok, get_template(tok, None), COMMON["max_len"], "truncate", 1)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in ds:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            keep = labels != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def child(tool: str, records: int, work: Path) -> dict:
    """Runs inside a fresh process: one training run, returns its figures."""
    import torch

    every = json.loads(DATA.read_text(encoding="utf-8"))
    recs, heldout = every[:records], every[records:records + HELDOUT]
    if tool in ("adept", "adept-bf16mm"):
        from adeptlm.cli import main
        from adeptlm.runrecord import read_run

        data = work / "train.json"
        data.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
        out = work / "adept"
        rc = main(["sft", "--dataset_dir", str(data), "--output_dir", str(out), "--max_seq_length",
                   str(COMMON["max_len"]), "--per_device_train_batch_size", str(COMMON["batch"]),
                   "--num_train_epochs", "1", "--learning_rate", str(COMMON["lr"]), "--lr_scheduler_type", "cosine",
                   "--lora_rank", str(COMMON["rank"]), "--lora_alpha", str(COMMON["alpha"]), "--lora_dropout",
                   str(COMMON["dropout"]), "--trainable", ",".join(TARGETS), "--seed", str(COMMON["seed"]),
                   "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
                   "--overwrite_output_dir", "True", *(["--model_name_or_path", MODEL["name"]] if MODEL["name"] else []),
                   *(["--cpu_matmul_precision", "bf16"] if tool == "adept-bf16mm" else [])])
        assert rc == 0
        run = read_run(out)["metrics"]
        tokens, runtime, loss = run["trained_tokens_seen"], run["train_runtime_s"], run["train_loss"]
        hist = [h["loss"] for h in run["loss_history"]]
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from adeptlm.models import resolve_model

        base = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL["name"]), dtype=torch.float32)
        trained = PeftModel.from_pretrained(base, str(out))
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        from adeptlm.models import resolve_model

        path = resolve_model(MODEL["name"])
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        rows = [{"prompt": [{"role": "user", "content": r["instruction"] + ("\n" + r["input"] if r["input"].strip()
                                                                             else "")}],
                 "completion": [{"role": "assistant", "content": r["output"]}]} for r in recs]
        cfg = SFTConfig(output_dir=str(work / "trl"), max_length=COMMON["max_len"],
                        per_device_train_batch_size=COMMON["batch"], num_train_epochs=1,
                        learning_rate=COMMON["lr"], lr_scheduler_type="cosine", seed=COMMON["seed"],
                        bf16=False, fp16=False, use_cpu=True, logging_steps=1, save_strategy="no",
                        report_to="none", include_num_input_tokens_seen="non_padding",
                        packing=(tool == "trl-packing"))
        peft = LoraConfig(r=COMMON["rank"], lora_alpha=COMMON["alpha"], lora_dropout=COMMON["dropout"],
                          target_modules=TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=peft)
        t0 = time.time()
        result = trainer.train()
        runtime = time.time() - t0
        tokens = int(trainer.state.num_input_tokens_seen)
        loss = result.training_loss
        hist = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trained = trainer.model
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # of training, before the held-out pass
    held = heldout_loss(trained, heldout, work)
    return {"tool": tool, "records": records, "tokens": tokens, "runtime_s": runtime, "tokens_per_s": tokens / runtime,
            "train_loss": loss, "last5_loss": statistics.mean(hist[-5:]), "heldout_loss": held,
            "heldout_records": len(heldout), "steps": len(hist), "peak_rss_mb": peak}


def matmul_peak_gflops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def meta_model(model: str | None = None):
    """The model's architecture without weights (meta device): for counting shapes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from adeptlm.models import resolve_model

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(model)))


def matmul_params(model: str | None = None, body_only: bool = False) -> int:
    """Weights that take part in a matmul per token: every Linear of the body plus the LM head."""
    import torch

    m = meta_model(model)
    body = sum(mod.weight.numel() for mod in m.model.modules() if isinstance(mod, torch.nn.Linear))
    return body if body_only else body + m.lm_head.weight.numel()


def run_child(script: str, argv: list[str]) -> dict:
    """One run in a fresh process (its own peak RSS); the child prints its figures as `RESULT {json}`."""
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(line[7:])
    print("   " + json.dumps(result), flush=True)
    return result


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"matmul_peak_gflops": round(report["matmul_peak_gflops"], 1), "summary": report["summary"]},
                     indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tools", default="adept,trl,trl-packing")
    ap.add_argument("--seed", type=int, default=COMMON["seed"],
                    help="seed of every run (LoRA init, dropout, batch order); vary it to see the loss spread")
    ap.add_argument("--model", help="a known model name (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--out", help="where the figures go (default bench/out/train.json, or train-MODEL.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    COMMON["seed"] = args.seed
    MODEL["name"] = args.model
    args.out = args.out or str(ROOT / "bench" / "out" / (f"train-{args.model}.json" if args.model else "train.json"))
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(child(args.child, args.records, Path(tmp))), flush=True)
        return
    if not DATA.is_file():
        sys.exit(f"{DATA} not found: this benchmark needs shared/data beside the checkout")
    results = []
    for rep in range(args.repeats):
        for tool in args.tools.split(","):
            print(f"== run {rep + 1}/{args.repeats}: {tool} on {args.records} records", flush=True)
            results.append(run_child(__file__, ["--child", tool, "--records", str(args.records), "--seed", str(args.seed),
                                                *(["--model", args.model] if args.model else [])]))
    peak = matmul_peak_gflops()
    n = matmul_params(args.model)
    summary = {}
    for tool in args.tools.split(","):
        rs = [r for r in results if r["tool"] == tool]
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        summary[tool] = {"tokens_per_s_median": tps, "runs": len(rs),
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs),
                         "train_loss_median": statistics.median(r["train_loss"] for r in rs),
                         "last5_loss_median": statistics.median(r["last5_loss"] for r in rs),
                         "heldout_loss_median": statistics.median(r["heldout_loss"] for r in rs),
                         "mfu": tps * 4 * n / (peak * 1e9)}
    if "adept" in summary:
        for tool in summary:
            summary[tool]["adept_speedup"] = summary["adept"]["tokens_per_s_median"] / summary[tool]["tokens_per_s_median"]
    report = {"setting": {**COMMON, "model": args.model or "embedded", "records": args.records, "repeats": args.repeats, "targets": TARGETS},
              "matmul_peak_gflops": peak, "matmul_params": n, "summary": summary, "runs": results}
    write_report(Path(args.out), report)


if __name__ == "__main__":
    main()
