"""The one `adept` command. Each sub-command is a plain function, attached to its argparse parser in
build_parser with set_defaults(func=...); the training stages (pt, sft, dpo, orpo, kto: the registry in
train/stages.py) parse their own flags (cmd_train).

Errors a user can act on (`AdeptError`, `InputError`) print as one line and exit with status 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .allocator import ask_for_huge_pages, keep_freed_memory
from .errors import AdeptError, one_line
from .evaluate.protocol import str2bool


def cmd_models(args: argparse.Namespace) -> int:
    from .models import DEFAULT_MODEL, KNOWN_MODELS, adeptlm_home, is_installed, is_materialised

    print(f"{'name':24} {'installed':10} {'ready':6} description")
    for name, m in KNOWN_MODELS.items():
        installed = "yes" if is_installed(name) else "no"
        ready = "yes" if is_materialised(name) else "no"
        default = " [default]" if name == DEFAULT_MODEL else ""
        print(f"{name:24} {installed:10} {ready:6} {m.description}{default}")
        if installed == "no":
            print(f"{'':42}install: {m.install}")
    print(f"\nready = materialised under {adeptlm_home() / 'models'} (done on first use). A local Hugging Face "
          "directory, a LoRA adapter directory or a .gguf file works wherever a model is taken.")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from .env import format_report, report

    print(format_report(report()))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_data

    report = check_data(args.path, model=args.model, template=args.template, max_length=args.max_length)
    print(report.format())
    return 0


def cmd_data_contamination(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .atomic import write_text
    from .data.contamination import find_overlaps, overlaps_json

    found, checked = find_overlaps(Path(args.exam), [Path(t) for t in args.training], args.ngram)
    for o in found:
        print(f"{o.subject} [{o.split}] {o.id}: {o.question[:70]}  <- {o.source}: \"{o.match[:60]}\"")
    print(f"adept: {len(found)} of {checked} exam items share a {args.ngram}-token run with the training data")
    if args.output:
        write_text(Path(args.output), overlaps_json(found, checked, args.ngram))
    return 0


def cmd_train(stage: str, argv: list[str]) -> int:
    """A training stage (train/stages.py): parsed by transformers' HfArgumentParser so every
    TrainingArguments flag (and the stage's TRL config flags) works."""
    from .train.args import parse_train_args
    from .train.cpu.switch import kernels_on, matmul_precision
    from .train.stages import get

    cfg = parse_train_args(stage, argv)
    if kernels_on(cfg):
        keep_freed_memory()
    run = get(stage).run
    from pathlib import Path

    from .lock import hold

    with hold(Path(cfg.training.output_dir), f"adept {stage}"), matmul_precision(cfg.compat.cpu_matmul_precision):
        run(cfg)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # every process leaves together and closes its gloo/NCCL group itself: left to interpreter
        # exit, a CPU FSDP rank was seen to abort in teardown ("terminate called without an active
        # exception") after a finished run
        dist.barrier()
        dist.destroy_process_group()
    return 0




def cmd_eval_exam(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.exam import run_exam
    from .evaluate.protocol import config_from_args

    if not args.data_dir:
        raise AdeptError(f"adept eval {args.eval_command} needs --data_dir: the exam folder (dev/ val/ test/)")
    cfg = config_from_args(args, output_dir=Path(args.output_dir or f"runs/eval-{args.eval_command}"),
                           n_times=max(1, args.n_times),
                           expect_layout=None if args.eval_command == "exam" else args.eval_command)
    keep_freed_memory()
    summary = run_exam(cfg)
    if summary:
        all_ = summary["All"]
        if all_.get("score") is None:
            print(f"adept: {all_['num']} questions answered; no gold answers: {cfg.output_dir}/take0/submission.json")
        else:
            print(f"adept: All {all_['score']:.2f}% micro, {all_['macro']:.2f}% macro over {all_['num']} questions "
                  f"({cfg.mode} mode) -> {cfg.output_dir}/summary.json")
    return 0


def cmd_eval_retention(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.retention import read_prompts, run_retention

    if not args.data and not args.prompts:
        raise AdeptError("adept eval retention needs --data (general text), --prompts (a JSON list) or both")
    keep_freed_memory()
    prompts = read_prompts(Path(args.prompts)) if args.prompts else None
    r = run_retention(args.base, args.model, Path(args.data) if args.data else None, prompts, args.max_length,
                      Path(args.output_dir) if args.output_dir else None)
    if "text" in r:
        t = r["text"]
        print(f"adept: general text, {t['tokens']} tokens: perplexity {t['base_perplexity']:.3f} (base) -> "
              f"{t['perplexity']:.3f}; mean KL(base || model) {t['mean_kl']:.5f}; same top token "
              f"{100 * t['same_top_token']:.2f}%")
    if "greedy" in r:
        g = r["greedy"]
        print(f"adept: general prompts: {g['same_answers']}/{g['prompts']} greedy answers as the base model's")
        for c in g["changed"]:
            print(f"  {c['prompt'][:60]}\n    base:  {c['base'][:100]}\n    model: {c['tuned'][:100]}")
    return 0


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.perplexity import run_ppl

    keep_freed_memory()
    r = run_ppl(args.model, Path(args.data), args.max_length, args.stride, args.dtype,
                Path(args.output_dir) if args.output_dir else None)
    print(f"adept: perplexity {r['perplexity']:.4f} over {r['tokens']} tokens in {r['documents']} documents "
          f"(window {r['max_length']}, stride {r['stride']})")
    return 0


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.compare import run_compare, to_markdown

    rows, out = run_compare(Path(args.before), Path(args.after), Path(args.output_dir) if args.output_dir else None)
    print(to_markdown(rows, args.before, args.after))
    print(f"adept: wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge

    if args.output_type != "huggingface":
        raise AdeptError("--output_type pth (Meta's consolidated.*.pth) is not written by adeptlm; merge to "
                         "huggingface and use `adept export gguf` for llama.cpp")
    loras = [p for p in args.lora_model.split(",") if p.strip()]
    out = merge(args.base_model, [p.strip() for p in loras], args.output_dir, overwrite=args.overwrite,
                alpha=args.alpha)
    at = f" at alpha {args.alpha:g}" if args.alpha != 1.0 else ""
    print(f"adept: merged {len(loras)} adapter(s){at} into {out}")
    return 0


def _select_arguments(p: argparse.ArgumentParser) -> None:
    from .evaluate.protocol import add_exam_arguments
    from .select import SELECT_KEYS

    add_exam_arguments(p)
    p.add_argument("--lora_model", required=True, help="the trained adapter directory (its checkpoint-* too)")
    p.add_argument("--general_exam", default=None, help="general exam folder (forgetting), same protocol")
    p.add_argument("--text", default=None, help="general text for KL: .txt directory or .jsonl with 'text'")
    p.add_argument("--prompts", default=None, help="general prompts for the greedy probe: a JSON list of strings")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help=SELECT_KEYS["alphas"])
    p.add_argument("--checkpoints", type=int, default=2, help=SELECT_KEYS["checkpoints"])
    p.add_argument("--kl_tokens", type=int, default=2048, help=SELECT_KEYS["kl_tokens"])
    p.add_argument("--prompts_limit", type=int, default=24, help=SELECT_KEYS["prompts_limit"])
    p.add_argument("--answer_tokens", type=int, default=32, help=SELECT_KEYS["max_new_tokens"])
    for key in ("max_kl", "min_same_answers", "max_general_drop"):
        p.add_argument(f"--{key}", type=float, default=None, help=f"budget: {SELECT_KEYS[key]} (default: not applied)")


def cmd_select(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.protocol import config_from_args
    from .evaluate.retention import read_prompts
    from .select import Budget, Probes, parse_alphas, run_select

    if not args.data_dir:
        raise AdeptError("adept select needs --data_dir: the selection exam (dev/ val/ test/), not the reported one")
    if args.mode == "both":
        raise AdeptError("adept select scores one formulation: --mode letter, cloze or generate")
    out = Path(args.output_dir or "runs/select")
    cfg = config_from_args(args, output_dir=out)
    prompts = read_prompts(Path(args.prompts)) if args.prompts else []
    probes = Probes(Path(args.data_dir), cfg, Path(args.general_exam) if args.general_exam else None,
                    Path(args.text) if args.text else None,
                    prompts[: args.prompts_limit] if args.prompts_limit else prompts, args.kl_tokens, args.answer_tokens)
    from .models import adapter_base, resolve_model

    base = args.model or adapter_base(resolve_model(args.lora_model))
    keep_freed_memory()
    m = run_select(str(base) if base else None, Path(args.lora_model), probes, out, parse_alphas(args.alphas), args.checkpoints,
                   Budget(args.max_kl, args.min_same_answers, args.max_general_drop))
    print(f"adept: chose {m['chosen']}; merge it with: adept merge --lora_model {m['adapter']} --alpha {m['alpha']:g}"
          f" --output_dir MERGED  ({out / 'run.json'})")
    return 0


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from .export.gguf import export_gguf

    r = export_gguf(args.model, args.output, args.outtype, pretokenizer=args.pretokenizer, converter=args.converter)
    by = f", by {args.converter}" if args.converter else ""
    print(f"adept: wrote {r.path} ({r.arch}, {r.outtype}, {r.tensors} tensors, pre-tokenizer {r.pre}, "
          f"{r.bytes / 2 ** 20:.1f} MiB{by}); check it with: adept export check --model MODEL --gguf {r.path}")
    return 0


def cmd_export_check(args: argparse.Namespace) -> int:
    from .export.check import check_gguf

    report = check_gguf(args.model, args.gguf, args.output_dir, args.exam, args.tokens, args.limit,
                        args.with_prompt)
    for line in report.lines():
        print(line)
    return 0


def _gen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="a .gguf file (llama.cpp), a known name, HF directory, merged run or adapter (transformers); "
                        "default: the embedded model")
    p.add_argument("--n_ctx", type=int, default=4096, help="llama.cpp context length in tokens")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                   help="transformers weights dtype")


def cmd_chat(args: argparse.Namespace) -> int:
    from .serve.chat import chat_loop
    from .backends import GenParams
    from .serve.engine import load_engine

    engine = load_engine(args.model, n_ctx=args.n_ctx, dtype=args.dtype)
    try:
        return chat_loop(engine, GenParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                           top_p=args.top_p, seed=args.seed), system=args.system)
    finally:
        engine.close()


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.engine import load_engine
    from .serve.api import Server

    engine = load_engine(args.model, n_ctx=args.n_ctx, dtype=args.dtype, backend=args.backend)
    server = Server(engine, args.host, args.port, api_key=args.api_key, queue_size=args.queue_size,
                    max_batch=args.max_batch, batch_wait=args.batch_wait_ms / 1000,
                    model_id=args.served_model_name, max_connections=args.max_connections,
                    keep_alive=args.keep_alive)
    print(f"adept: serving {server.model_id} ({engine.name}) on http://{args.host}:{server.port}/v1"
          f"{' (API key required)' if args.api_key else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


def cmd_arena(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.retention import read_prompts
    from .serve.arena import exam_prompts, run_arena

    if bool(args.prompts) == bool(args.exam):
        raise AdeptError("adept arena: give one of --prompts FILE or --exam FOLDER")
    prompts = read_prompts(Path(args.prompts)) if args.prompts else exam_prompts(Path(args.exam))
    prompts = prompts[: args.limit] if args.limit else prompts
    run_arena(args.a, args.b, prompts, Path(args.votes), args.max_new_tokens, args.host, args.port,
              args.judge, args.judge_model, args.judge_key, args.seed)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .pipeline import BUNDLED, recipe_path, run_recipe

    if args.list:
        for name, (path, what) in BUNDLED.items():
            print(f"{name:<14} {what}\n{'':<14} {path}")
        return 0
    keep_freed_memory()
    root = run_recipe(recipe_path(args.recipe), quick=args.quick,
                      output_root=Path(args.output_dir) if args.output_dir else None)
    print(f"adept: report: {root / 'report.html'} and {root / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate.report import write_report

    paths = write_report(Path(args.run_dir))
    print(f"adept: wrote {', '.join(str(p) for p in paths[:2])}")
    return 0


def _exam_arguments(p: argparse.ArgumentParser) -> None:
    from .evaluate.protocol import add_exam_arguments

    add_exam_arguments(p)
    p.set_defaults(func=cmd_eval_exam)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adept",
        description="Make a general LLM an expert in a subject and prove it. Models are a known name "
                    "(see `adept models`), a local Hugging Face directory or a .gguf file; nothing is "
                    "downloaded from a model hub.",
    )
    parser.add_argument("--version", action="version", version=f"adeptlm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the known models and whether they are installed",
                       description="List the known models: the embedded default and optional extras.")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("env", help="versions, CPU, GPU and model cache: paste it into a bug report",
                       description="Print adeptlm's version, Python, the platform, the versions of the libraries "
                                   "it drives, llama.cpp's build flags, the CPU's vector extensions, visible GPUs "
                                   "and the model cache, as one block to paste into a bug report.")
    p.set_defaults(func=cmd_env)

    data = sub.add_parser("data", help="inspect and validate data files",
                          description="Inspect and validate training and exam data.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser(
        "check", help="say what a file or directory holds, count it, measure token lengths, show one example",
        description="Detect the kind of data (pre-training corpus, instructions, preference pairs, "
                    "multiple-choice exam), count records, report token-length statistics with the "
                    "model's tokenizer and chat template, warn about duplicates, empty outputs and "
                    "over-long records, and print one example with the trained tokens between [[ and ]].")
    p.add_argument("path", help="a file (.txt, .json, .jsonl, .csv) or a directory")
    p.add_argument("--model", default=None, help="model whose tokenizer measures lengths (default: the embedded one)")
    p.add_argument("--template", default=None,
                   help="chat template: 'auto' (the tokenizer's own, default), chatml, llama3, alpaca or a .jinja file")
    p.add_argument("--max_length", "--max-length", type=int, default=1024,
                   help="warn about records longer than this many tokens (default 1024)")
    p.set_defaults(func=cmd_data_check)
    p = dsub.add_parser(
        "contamination", help="exam items whose question and answer occur in training data (13-gram overlap)",
        description="Check an exam against training data the way decontamination is done for GPT-3 and "
                    "lm-evaluation-harness: lower-cased NFKC text split into words and single CJK characters; "
                    "an item (question plus its correct option) is contaminated when any run of --ngram tokens "
                    "of it also occurs in a training record (an item shorter than that: when it occurs whole). "
                    "Lists the items and the training record holding each; exit 0 either way.")
    p.add_argument("exam", help="exam folder (C-Eval, CMMLU or MMLU layout)")
    p.add_argument("training", nargs="+", help="corpus, instruction or preference files or directories")
    p.add_argument("--ngram", type=int, default=13, help="tokens per n-gram (default 13)")
    p.add_argument("--output", default=None, help="also write the list as JSON there")
    p.set_defaults(func=cmd_data_contamination)

    ev = sub.add_parser("eval", help="exams (C-Eval, CMMLU, MMLU, your own), perplexity, before/after comparison",
                        description="Validate a model: multiple-choice exams, perplexity, and before/after tables.")
    esub = ev.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    from .data import layouts

    for name, what in ([(x.name, f"{x.title} ({x.files})") for x in map(layouts.get, layouts.NAMES)]
                       + [("exam", "any exam in those layouts, 2 to 10 options: your own subject exam")]):
        _exam_arguments(esub.add_parser(name, help=what, description=f"Score a model on {what}. Prompts, "
                                        "flags and summary.json follow the seed's C-Eval script."))
    p = esub.add_parser("ppl", help="perplexity on a corpus (sliding window over each document)",
                        description="Perplexity of a model on a corpus (.txt directory or .jsonl with 'text').")
    p.add_argument("--model", "--model_path", "-m", default=None, help="model (default: the embedded one)")
    p.add_argument("--data", "--data_dir", required=True, help="corpus file or directory")
    p.add_argument("--max_length", type=int, default=1024, help="window length in tokens")
    p.add_argument("--stride", type=int, default=512, help="tokens the window advances by")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.add_argument("--output_dir", default=None, help="also write run.json there")
    p.set_defaults(func=cmd_eval_ppl)
    p = esub.add_parser("retention", help="how far a tuned model moved from its base on general text and prompts",
                        description="Retention probes: on general text, both models' perplexity and the mean KL "
                                    "divergence KL(base || model) of their next-token distributions with the share "
                                    "of positions whose top token agrees (as llama-perplexity --kl-divergence "
                                    "reports them); on general prompts, the share of greedy answers that are the "
                                    "base model's own, the changed ones listed side by side.")
    p.add_argument("--base", required=True, help="the base model (known name or HF directory)")
    p.add_argument("--model", "--model_path", "-m", required=True, help="the tuned model (HF directory or adapter)")
    p.add_argument("--data", default=None, help="general text: .txt directory or .jsonl with 'text' (not the subject)")
    p.add_argument("--prompts", default=None, help="general prompts: a JSON list of strings")
    p.add_argument("--max_length", type=int, default=512, help="window length in tokens")
    p.add_argument("--output_dir", default=None, help="also write run.json there")
    p.set_defaults(func=cmd_eval_retention)
    p = esub.add_parser("compare", help="per-category gain and forgetting between two exam runs",
                        description="Compare two exam outputs (directories holding summary.json): prints a "
                                    "per-category and per-subject table and writes compare.md and compare.png.")
    p.add_argument("before", help="exam output before training (directory or summary.json)")
    p.add_argument("after", help="exam output after training")
    p.add_argument("--output_dir", default=None, help="where compare.md/png go (default: AFTER)")
    p.set_defaults(func=cmd_eval_compare)

    p = sub.add_parser(
        "merge", help="merge LoRA adapters into full safetensors weights, shard by shard, in little memory",
        description="Merge LoRA adapters into a base model without building it: each base shard is read "
                    "tensor by tensor, W += (alpha/r)*B@A in fp32 cast back to the base dtype, modules_to_save "
                    "replace their tensors, and the output (safetensors with index, config, generation config, "
                    "tokenizer, chat template) is written to a temporary sibling and renamed when complete.")
    p.add_argument("--base_model", default=None,
                   help="base model: known name or HF directory (default: the first adapter's base)")
    p.add_argument("--lora_model", required=True, help="adapter directory; 'a,b' applies several in order")
    p.add_argument("--output_dir", default="./merged_model", help="where the merged model goes")
    p.add_argument("--output_type", default="huggingface", choices=["huggingface", "pth"],
                   help="huggingface (safetensors); pth is refused with an explanation")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="scale of the adapters' update in [0, 1]: W0 + alpha*(alpha_lora/r)*B@A (the weight "
                        "interpolation `adept select` chooses; 1 = the adapter as trained)")
    p.add_argument("--verbose", action="store_true", help="accepted for the seed's scripts; progress is always shown")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "select", help="the adapter at several scales and its checkpoints, one chosen inside a forgetting budget",
        description="Score the trained adapter at scales alpha (0 = the base, 1 = the adapter; WiSE-FT's weight "
                    "interpolation) and the training stage's saved checkpoints on a selection exam that the "
                    "reported exam never uses, the general exam and the retention probes (KL on general text, "
                    "greedy answers to general prompts), and choose the largest selection gain inside the "
                    "budget. Exam flags set the protocol; --model is the base, --data_dir the selection exam. "
                    "Then: adept merge --lora_model CHOSEN --alpha ALPHA.")
    _select_arguments(p)
    p.set_defaults(func=cmd_select)

    ex = sub.add_parser("export", help="GGUF files for llama.cpp, and a check against the original model",
                        description="Export to GGUF (llama.cpp, Ollama) and check the file against the HF model.")
    xsub = ex.add_subparsers(dest="export_command", metavar="ACTION", required=True)
    from .export.gguf import OUTTYPES, families_text
    p = xsub.add_parser("gguf", help="write a GGUF file (f32/f16/bf16/q8_0/q4_0/... and k-quants)",
                        description="Write a model as one GGUF file with its tokenizer (and pre-tokenizer type), "
                                    "special tokens and chat template. f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 "
                                    "are quantized by the gguf package; k-quants (q4_k_m, ...) by llama.cpp's "
                                    "quantizer from an f16 file. Families (each tested from training to llama.cpp's "
                                    f"logits): {families_text()}. Rope: default, linear, llama3. Tokenizers: "
                                    "byte-level BPE (Llama-3, Qwen2, SmolLM, GPT-2) and SentencePiece-style BPE "
                                    "with byte fallback (Gemma, Llama-2, Mistral). Anything else stops before "
                                    "writing, with one line; --converter hands such a model to llama.cpp's own "
                                    "converter.")
    p.add_argument("--model", default=None, help="known name, HF directory or merged run (default: the embedded model)")
    p.add_argument("--outtype", default="f16", choices=OUTTYPES, help="tensor type of the weight matrices")
    p.add_argument("--output", "--outfile", required=True, help="the .gguf file to write")
    p.add_argument("--pretokenizer", default=None,
                   help="llama.cpp pre-tokenizer name, when adept cannot tell it from tokenizer.json")
    p.add_argument("--converter", default=None, metavar="PATH",
                   help="write the file with llama.cpp's own convert_hf_to_gguf.py at PATH instead (a llama.cpp "
                        "checkout, or vendor/llama.cpp/ in llama-cpp-python's sdist); then run `adept export check`")
    p.set_defaults(func=cmd_export_gguf)
    p = xsub.add_parser("check", help="compare a GGUF file with its HF model: tokens, greedy answers, an exam",
                        description="Tokenize a fixed sample (English, Chinese, code, emoji, whitespace) with both "
                                    "tokenizers; run 20 chat prompts greedily through transformers and llama.cpp and "
                                    "report token agreement; optionally run an exam through both. Writes check.json.")
    p.add_argument("--model", default=None, help="the HF model the GGUF was made from (default: the embedded model)")
    p.add_argument("--gguf", required=True, help="the .gguf file")
    p.add_argument("--exam", default=None, help="an exam folder (C-Eval/CMMLU/MMLU layout) to run through both")
    p.add_argument("--limit", type=int, default=None, help="exam: at most N questions per subject")
    p.add_argument("--with_prompt", type=str2bool, default=False, help="exam: use the chat template (True/False)")
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    p.add_argument("--output_dir", default=None, help="where check.json goes (default: beside the GGUF)")
    p.set_defaults(func=cmd_export_check)

    p = sub.add_parser("chat", help="chat with a model in the terminal (GGUF via llama.cpp, or transformers)",
                       description="Terminal chat: streamed answers, multi-turn, the model's own chat template, stops "
                                   "at the end-of-turn token. /reset forgets the conversation, /exit leaves. With "
                                   "piped stdin, each input line gets one answer line.")
    _gen_arguments(p)
    p.add_argument("--system", default=None, help="a system prompt")
    p.add_argument("--max_tokens", type=int, default=512, help="longest answer in tokens")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (llama.cpp, transformers or vLLM)",
                       description="OpenAI-compatible server: /v1/chat/completions (streaming or not), "
                                   "/v1/completions, /v1/embeddings, /v1/models, /health, and a chat page at /. "
                                   "Requests wait in a bounded queue (a full queue answers 503); with transformers, "
                                   "waiting requests are decoded together. Binds 127.0.0.1 unless --host says "
                                   "otherwise. Runs on uvicorn (FastAPI); the OpenAPI page is at /docs.")
    _gen_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--api_key", default=None, help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--queue_size", type=int, default=16, help="requests waiting beyond this answer 503")
    p.add_argument("--max_batch", type=int, default=8,
                   help="decode up to N waiting requests together (same temperature and top-p, no seed; "
                        "llama.cpp: as parallel sequences of one context); 1 = one at a time")
    p.add_argument("--batch_wait_ms", type=float, default=30,
                   help="how long a request that starts a batch waits for others to join it")
    p.add_argument("--served_model_name", default=None, help="model id reported to clients")
    p.add_argument("--max_connections", type=int, default=1024,
                   help="connections open at once; a request beyond them is answered 503")
    p.add_argument("--keep_alive", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open after its last answer")
    p.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp", "vllm"],
                   help="auto: llama.cpp for .gguf, transformers otherwise; vllm: a merged directory on vLLM's "
                        "engine inside this server (its scheduler batches requests as they come; needs the "
                        "environment `make vllm` builds)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("arena", help="a blind vote between two models' answers (win rates, Elo)",
                       description="Both models answer every prompt (greedy, each in its own chat template); a "
                                   "page shows each prompt's two answers in random order and takes a vote, appended "
                                   "to --votes as the model that won. The page and GET /standings give win rates "
                                   "with 95%% intervals and bootstrap Elo. --judge URL lets an OpenAI-compatible "
                                   "endpoint vote on every prompt instead (no page), its rationale stored.")
    p.add_argument("a", help="first model: a known name, HF directory, adapter, merged run or .gguf")
    p.add_argument("b", help="second model (e.g. the tuned one)")
    p.add_argument("--prompts", default=None, help="a JSON list of prompt strings")
    p.add_argument("--exam", default=None, help="or an exam folder: its questions, without their options")
    p.add_argument("--limit", type=int, default=None, help="at most N prompts")
    p.add_argument("--votes", default="arena-votes.jsonl", help="the votes file (appended to; read for standings)")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="port of the voting page (0: any free port)")
    p.add_argument("--judge", default=None, help="an OpenAI-compatible base URL (.../v1) that votes instead")
    p.add_argument("--judge_model", default="judge", help="the model name sent to the judge")
    p.add_argument("--judge_key", default=None, help="the judge's API key")
    p.add_argument("--seed", type=int, default=0, help="order of the pairs and of the sides")
    p.set_defaults(func=cmd_arena)

    p = sub.add_parser("run", help="the whole loop from a YAML recipe (default: the bundled demo)",
                       description="Chain baseline evaluation, the training stages (pt, sft, dpo, orpo, kto), merge, evaluation, GGUF export, "
                                   "export check and report from a YAML recipe; each stage writes runs/<name>/<stage>/ "
                                   "and a rerun skips finished stages and resumes an interrupted one. Without a "
                                   "recipe: the bundled demo (a fictional subject on the embedded model); "
                                   "`adept run xilan-zh`: the Chinese one on gemma3-270m.")
    p.add_argument("recipe", nargs="?", default=None,
                   help="a bundled recipe's name (see --list) or a recipe YAML (default: quenta-demo)")
    p.add_argument("--list", action="store_true", help="list the bundled recipes and exit")
    p.add_argument("--quick", action="store_true", help="a reduced version of the recipe (a few minutes)")
    p.add_argument("--output_dir", default=None, help="parent of runs/<name> (default: ./runs)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="rebuild report.md and report.html of an `adept run` directory")
    p.add_argument("run_dir", help="runs/<name>")
    p.set_defaults(func=cmd_report)

    # Listed here for `adept --help`; their own flags are parsed by cmd_train (see main).
    from .train.stages import stages

    for st in stages():
        sub.add_parser(st.name, help=f"{st.summary}; see adept {st.name} --help")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .train.stages import NAMES

    ask_for_huge_pages(argv, (*NAMES, "run"))  # first: torch reads it at its first allocation
    from .quiet import install

    install()  # library warnings and log lines the user cannot act on (adeptlm/quiet.py)
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest and rest[0] in NAMES:
        try:
            return cmd_train(rest[0], rest[1:])
        except AdeptError as exc:
            if debug:
                raise
            print(f"adept: error: {one_line(str(exc))}", file=sys.stderr)
            return exc.exit_code
        except OSError as exc:
            if debug or not _full_disk_message(exc):
                raise
            print(_full_disk_message(exc), file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except AdeptError as exc:
        if args.debug:
            raise
        print(f"adept: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("adept: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug or not _full_disk_message(exc):
            raise
        print(_full_disk_message(exc), file=sys.stderr)
        return 2


def _full_disk_message(exc: OSError) -> str | None:
    """One line for a write that found the disk full where no atomic output turned it into an
    AdeptError first (a training checkpoint, an exam's CSV); None for any other OSError."""
    from .atomic import FULL

    if exc.errno not in FULL:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return (f"adept: error: {where}the disk is full ({exc.strerror}); free some space and run again (training "
            "resumes from its last whole checkpoint)")


if __name__ == "__main__":
    sys.exit(main())
