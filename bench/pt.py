"""Continued pre-training speed: `adept pt` against the seed's way (HF Trainer + PEFT, as
run_clm_pt_with_peft.py trains) and TRL's SFTTrainer on plain text, side by side.

Setting (issue 22, item 1): the seed's PT settings scaled down to this machine: the embedded
SmolLM2-135M-Instruct (or `--model gemma3-270m`, item 2) in fp32, LoRA r=64 alpha=128 dropout 0.05
on the 7 projections, with and without `modules_to_save embed_tokens,lm_head` (the seed trains both
in full), block size 512, batch 2, 1 epoch, lr 1e-4 cosine with 5% warm-up, weight decay 0.01, seed 42. The corpus is real
Chinese text: the outputs of shared/data/instructions/alpaca_zh_demo.json, one document each (the
first --documents for training, the next 40 held out). Each run is a fresh child process (so peak
RSS is its own); runs alternate between tools to share the machine's noise.

  - adept:  `adept pt` with its defaults (documents packed with an end-of-text token between them,
            each attending only to itself: --packing documents)
  - adept-stream: `adept pt --packing stream` (blocks attend across documents, as the seed's do)
  - stock:  the seed's pipeline: every line tokenized alone, concatenated per map batch and cut into
            blocks (group_texts), default_data_collator, transformers' Trainer over a PEFT model
  - trl:    TRL's SFTTrainer on the documents as plain text, packing=True, its other defaults

Reported: trained tokens per second (tokens in the trained blocks / train runtime), peak RSS, the
final logged loss, two held-out losses of the final adapter (token-mean cross-entropy over the held-out
documents: packed the same way for every tool as adeptlm packs them, 512-token blocks; and each
document alone as the tokenizer encodes it, as `adept eval ppl` scores it), and model FLOP utilisation against
the machine's measured fp32 matmul peak: 4 FLOPs per frozen matmul weight per token (forward, and
backward to the inputs) and 6 for each weight trained in full (lm_head with modules_to_save).

    python bench/pt.py [--documents 120] [--repeats 3] [--tools adept,adept-stream,stock,trl] [--save none,embed]
                       [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import MODEL, ROOT, TARGETS, matmul_params, matmul_peak_gflops, run_child, write_report  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_zh_demo.json"
COMMON = dict(lr=1e-4, rank=64, alpha=128, dropout=0.05, block=512, batch=2, seed=42, warmup=0.05, wd=0.01)
HELDOUT = 40
SAVE = {"none": "", "embed": "embed_tokens,lm_head"}


def documents(n: int) -> tuple[list[str], list[str]]:
    outs = [r["output"].strip() for r in json.loads(DATA.read_text(encoding="utf-8")) if r["output"].strip()]
    return outs[:n], outs[n:n + HELDOUT]


def heldout_loss(model, tok, docs: list[str], bos: bool = True) -> float:
    """Token-mean cross-entropy over the held-out documents, joined in order and cut into 512-token
    blocks that attend across documents (adeptlm's --packing stream layout). bos=False: without the
    BOS that adeptlm puts before each document where the tokenizer adds one, as adeptlm packed them
    before 2026-12-03."""
    from contextlib import nullcontext
    from unittest import mock

    import torch

    from adeptlm.data import tokenize
    from adeptlm.data.corpus import Document

    with nullcontext() if bos else mock.patch.object(tokenize, "start_of_text_ids", lambda t: []):
        # stream layout: the same blocks whatever adept pt's default packing is
        ds, _ = tokenize.pack_documents([Document(d, "heldout") for d in docs], tok, COMMON["block"], None,
                                        isolate=False)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in ds:
            ids = torch.tensor([row["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return total / count


def heldout_doc_loss(model, tok, docs: list[str]) -> float:
    """Token-mean cross-entropy with each held-out document scored alone, as the tokenizer encodes it
    (BOS first where it adds one) and as `adept eval ppl` scores it: the format inference sees, which
    none of the three tools' training layouts (packed, or the seed's line per sample) favours."""
    from adeptlm.evaluate.perplexity import perplexity

    model.eval()
    r = perplexity(model, tok, docs, max_length=COMMON["block"], stride=COMMON["block"])
    return r["nll"] / r["tokens"]


def lora_config(save: str):
    from peft import LoraConfig

    return LoraConfig(r=COMMON["rank"], lora_alpha=COMMON["alpha"], lora_dropout=COMMON["dropout"],
                      target_modules=TARGETS, modules_to_save=SAVE[save].split(",") if SAVE[save] else None,
                      task_type="CAUSAL_LM")


def stock_blocks(docs: list[str], tok) -> list[dict]:
    """The seed's data pipeline: one sample per line, tokenized alone, concatenated per batch of 1000
    lines and cut into blocks; a batch's remainder is dropped when the batch fills a block."""
    lines = [line for d in docs for line in d.split("\n")]
    out = []
    for start in range(0, len(lines), 1000):
        ids = list(chain.from_iterable(tok(x)["input_ids"] for x in lines[start:start + 1000]))
        size = COMMON["block"]
        total = (len(ids) // size) * size if len(ids) >= size else len(ids)
        out += [{"input_ids": ids[i:i + size], "attention_mask": [1] * len(ids[i:i + size]),
                 "labels": ids[i:i + size]} for i in range(0, total, size)]
    return out


def child(tool: str, save: str, n_docs: int, work: Path) -> dict:
    """Runs inside a fresh process: one training run, returns its figures."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adeptlm.models import resolve_model

    path = resolve_model(MODEL["name"])
    tok = AutoTokenizer.from_pretrained(path)
    docs, held = documents(n_docs)
    if tool == "base":  # the untrained model, for scale
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return {"tool": "base", "heldout_loss": heldout_loss(model, tok, held),
                "heldout_loss_without_bos": heldout_loss(model, tok, held, bos=False),
                "heldout_doc_loss": heldout_doc_loss(model, tok, held)}
    if tool in ("adept", "adept-stream"):
        from adeptlm.cli import main
        from adeptlm.runrecord import read_run

        data = work / "corpus.jsonl"
        data.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        out = work / "adept"
        rc = main(["pt", "--dataset_dir", str(data), "--output_dir", str(out), "--block_size", str(COMMON["block"]),
                   "--per_device_train_batch_size", str(COMMON["batch"]), "--num_train_epochs", "1",
                   "--learning_rate", str(COMMON["lr"]), "--lr_scheduler_type", "cosine",
                   "--warmup_ratio", str(COMMON["warmup"]), "--weight_decay", str(COMMON["wd"]),
                   "--lora_rank", str(COMMON["rank"]), "--lora_alpha", str(COMMON["alpha"]),
                   "--lora_dropout", str(COMMON["dropout"]), "--trainable", ",".join(TARGETS),
                   "--modules_to_save", SAVE[save], "--seed", str(COMMON["seed"]), "--logging_steps", "1",
                   "--save_strategy", "no", "--report_to", "none", "--validation_split_percentage", "0",
                   "--overwrite_output_dir", "True", "--packing", "stream" if tool == "adept-stream" else "documents",
                   *(["--model_name_or_path", MODEL["name"]] if MODEL["name"] else [])])
        assert rc == 0
        run = read_run(out)["metrics"]
        tokens, runtime = run["trained_tokens_seen"], run["train_runtime_s"]
        last = run["loss_history"][-1]["loss"]
        from peft import PeftModel

        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), str(out))
    else:
        from datasets import Dataset

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        common = dict(output_dir=str(work / tool), per_device_train_batch_size=COMMON["batch"], num_train_epochs=1,
                      learning_rate=COMMON["lr"], lr_scheduler_type="cosine", warmup_steps=COMMON["warmup"],  # a share below 1 (transformers 5)
                      weight_decay=COMMON["wd"], seed=COMMON["seed"], bf16=False, fp16=False, use_cpu=True,
                      logging_steps=1, save_strategy="no", report_to="none",
                      include_num_input_tokens_seen="non_padding")
        if tool == "stock":
            from peft import get_peft_model
            from transformers import Trainer, TrainingArguments, default_data_collator

            model = get_peft_model(model, lora_config(save))
            trainer = Trainer(model=model, args=TrainingArguments(**common),
                              train_dataset=Dataset.from_list(stock_blocks(docs, tok)),
                              data_collator=default_data_collator, processing_class=tok)
        else:
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=COMMON["block"], packing=True,
                                                             dataset_text_field="text"),
                                 train_dataset=Dataset.from_list([{"text": d} for d in docs]), processing_class=tok,
                                 peft_config=lora_config(save))
        t0 = time.time()
        trainer.train()
        runtime = time.time() - t0
        tokens = int(trainer.state.num_input_tokens_seen)
        last = [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]
        trained = trainer.model
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # of training, before the held-out pass
    packed, alone = heldout_loss(trained, tok, held), heldout_doc_loss(trained, tok, held)
    return {"tool": tool, "save": save, "documents": n_docs, "tokens": tokens, "runtime_s": runtime,
            "tokens_per_s": tokens / runtime, "last_loss": last, "heldout_loss": packed,
            "heldout_doc_loss": alone, "peak_rss_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", default="adept,adept-stream,stock,trl")
    ap.add_argument("--save", default="none,embed", help="none: LoRA only; embed: also embed_tokens,lm_head in full")
    ap.add_argument("--model", help="a known model name (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--out", help="where the figures go (default bench/out/pt.json, or pt-MODEL.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child_save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    MODEL["name"] = args.model
    args.out = args.out or str(ROOT / "bench" / "out" / (f"pt-{args.model}.json" if args.model else "pt.json"))
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(child(args.child, args.child_save, args.documents, Path(tmp))), flush=True)
        return
    if not DATA.is_file():
        sys.exit(f"{DATA} not found: this benchmark needs shared/data beside the checkout")
    tools, saves = args.tools.split(","), args.save.split(",")
    print("== the base model's held-out losses", flush=True)
    base = run_child(__file__, ["--child", "base", "--child_save", "none", "--documents", str(args.documents),
                                *(["--model", args.model] if args.model else [])])
    results = []
    for rep in range(args.repeats):
        for save in saves:
            for tool in tools:
                print(f"== run {rep + 1}/{args.repeats}: {tool}, modules_to_save {save}", flush=True)
                results.append(run_child(__file__, ["--child", tool, "--child_save", save,
                                                    "--documents", str(args.documents),
                                                    *(["--model", args.model] if args.model else [])]))
    peak = matmul_peak_gflops()
    n = matmul_params(args.model)
    head = n - matmul_params(args.model, body_only=True)
    summary = {}
    for save in saves:
        for tool in tools:
            rs = [r for r in results if r["tool"] == tool and r["save"] == save]
            tps = statistics.median(r["tokens_per_s"] for r in rs)
            flops_per_token = 4 * n + (2 * head if save == "embed" else 0)  # lm_head's weight gradient too
            summary[f"{tool}/{save}"] = {"tokens_per_s_median": tps, "runs": len(rs),
                                         "tokens_per_s_range": [min(r["tokens_per_s"] for r in rs),
                                                                max(r["tokens_per_s"] for r in rs)],
                                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs),
                                         "heldout_loss_median": statistics.median(r["heldout_loss"] for r in rs),
                                         "heldout_doc_loss_median": statistics.median(r["heldout_doc_loss"]
                                                                                      for r in rs),
                                         "mfu": tps * flops_per_token / (peak * 1e9)}
        if "adept" in tools:
            for tool in tools:
                s = summary[f"{tool}/{save}"]
                s["adept_speedup"] = summary[f"adept/{save}"]["tokens_per_s_median"] / s["tokens_per_s_median"]
    report = {"setting": {**COMMON, "model": args.model or "embedded", "documents": args.documents, "heldout_documents": HELDOUT,
                          "repeats": args.repeats, "targets": TARGETS},
              "matmul_peak_gflops": peak, "matmul_params": n, "base": base, "summary": summary, "runs": results}
    write_report(Path(args.out), report)


if __name__ == "__main__":
    main()
