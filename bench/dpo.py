"""DPO speed: `adept dpo` against TRL's DPOTrainer used directly, on the same pairs, model and LoRA.

Setting (issue 22, item 7, scaled up from its 6 pairs and 2 steps so a step's noise matters less):
the embedded SmolLM2-135M-Instruct, the first N pairs (default 16) of
shared/data/preferences/dpo_zh_demo.json, LoRA r=8 alpha=16 on q_proj,v_proj, max length 256,
batch 2, one epoch, fp32, lr 5e-6 (adept dpo's default; TRL's is 1e-6: the same for both so the
rewards compare), beta 0.1, seed 42. Each run is a fresh child process (peak RSS its own); runs
alternate between tools to share the machine's noise.

  - adept: `adept dpo` with its defaults (reference = the same network with the adapter off)
  - trl:   DPOTrainer(model, args=DPOConfig(...), peft_config=LoraConfig(...)) as a user writes it,
           TRL's defaults otherwise (gradient checkpointing on, as DPOConfig sets it)

Both get the pairs as TRL's conversational prompt/chosen/rejected records (adeptlm's reader turns
the DPO-zh sharegpt shape into them; TRL renders them with the model's chat template).
Reported per tool (medians over runs): non-padding tokens seen / train runtime, train runtime,
peak RSS, train loss, and the last logged reward accuracy and margin.

    python bench/dpo.py [--pairs 16] [--repeats 3] [--tools adept,trl]
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
DATA = ROOT.parent / "shared" / "data" / "preferences" / "dpo_zh_demo.json"
COMMON = dict(lr=5e-6, rank=8, alpha=16, targets="q_proj,v_proj", max_len=256, batch=2, beta=0.1, seed=42)


def child(tool: str, pairs: int, work: Path) -> dict:
    """Runs inside a fresh process: one training run, returns its figures."""
    data = work / "pairs.json"
    data.write_text(json.dumps(json.loads(DATA.read_text(encoding="utf-8"))[:pairs], ensure_ascii=False),
                    encoding="utf-8")
    if tool == "adept":
        from adeptlm.cli import main
        from adeptlm.runrecord import read_run

        out = work / "adept"
        rc = main(["dpo", "--dataset_dir", str(data), "--output_dir", str(out), "--max_length", str(COMMON["max_len"]),
                   "--per_device_train_batch_size", str(COMMON["batch"]), "--num_train_epochs", "1",
                   "--learning_rate", str(COMMON["lr"]), "--beta", str(COMMON["beta"]),
                   "--lora_rank", str(COMMON["rank"]), "--lora_alpha", str(COMMON["alpha"]),
                   "--trainable", COMMON["targets"], "--seed", str(COMMON["seed"]), "--logging_steps", "1",
                   "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir", "True"])
        assert rc == 0
        m = read_run(out)["metrics"]
        tokens, runtime, loss = m["trained_tokens_seen"], m["train_runtime_s"], m["train_loss"]
        acc, margin, steps = m.get("rewards_accuracies"), m.get("rewards_margins"), m["global_step"]
    else:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer

        from adeptlm.data.preferences import read_preferences
        from adeptlm.models import resolve_model
        from adeptlm.train.dpo import to_records

        path = resolve_model(None)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        records, _ = to_records(read_preferences(data)[1], tok, None)
        cfg = DPOConfig(output_dir=str(work / "trl"), max_length=COMMON["max_len"],
                        per_device_train_batch_size=COMMON["batch"], num_train_epochs=1,
                        learning_rate=COMMON["lr"], beta=COMMON["beta"], seed=COMMON["seed"], bf16=False, fp16=False,
                        use_cpu=True, logging_steps=1, save_strategy="no", report_to="none",
                        include_num_input_tokens_seen="non_padding")
        peft = LoraConfig(r=COMMON["rank"], lora_alpha=COMMON["alpha"], target_modules=COMMON["targets"].split(","),
                          task_type="CAUSAL_LM")
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(records), processing_class=tok,
                             peft_config=peft)
        t0 = time.time()
        result = trainer.train()
        runtime = time.time() - t0
        tokens, loss, steps = int(trainer.state.num_input_tokens_seen), result.training_loss, trainer.state.global_step
        last = [h for h in trainer.state.log_history if "rewards/accuracies" in h and "loss" in h][-1]
        acc, margin = last["rewards/accuracies"], last["rewards/margins"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tool": tool, "pairs": pairs, "steps": steps, "tokens": tokens, "runtime_s": runtime,
            "tokens_per_s": tokens / runtime, "train_loss": loss, "reward_accuracy": acc, "reward_margin": margin,
            "peak_rss_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", default="adept,trl")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "dpo.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(child(args.child, args.pairs, Path(tmp))), flush=True)
        return
    if not DATA.is_file():
        sys.exit(f"{DATA} not found: this benchmark needs shared/data beside the checkout")
    tools = args.tools.split(",")
    results = []
    for rep in range(args.repeats):
        for tool in tools:
            print(f"== run {rep + 1}/{args.repeats}: {tool} on {args.pairs} pairs", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--child", tool, "--pairs", str(args.pairs)],
                                  capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{tool} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[7:]))
            print("   " + json.dumps(results[-1]), flush=True)
    summary = {}
    for tool in tools:
        rs = [r for r in results if r["tool"] == tool]
        summary[tool] = {"runs": len(rs), **{f"{k}_median": statistics.median(r[k] for r in rs) for k in
                                             ("tokens_per_s", "runtime_s", "train_loss", "reward_accuracy",
                                              "reward_margin")},
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs)}
    if "adept" in summary:
        for tool in summary:
            summary[tool]["adept_speedup"] = summary["adept"]["tokens_per_s_median"] / summary[tool]["tokens_per_s_median"]
    report = {"setting": {**COMMON, "pairs": args.pairs, "repeats": args.repeats}, "summary": summary,
              "runs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
