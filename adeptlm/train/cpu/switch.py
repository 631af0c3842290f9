"""One switch for the training loop's CPU speed paths: --cpu_kernels auto | on | off.

The speed paths, each compared with the stock path in bench/RESULTS.md (fp32 on CPU, one process or
CPU DDP):
- the LM head and cross-entropy only at trained positions, in one buffer as large as the logits:
  log_softmax and the backward pass both in place (trainer.py's TrainedPositionsLoss, loss.py);
- a fused LoRA forward (lorafast.py) and a cheaper dropout mask (dropout.py);
- glibc keeping freed memory for reuse and huge pages for torch's buffers (adeptlm/allocator.py).

ADEPT_CPU_KERNELS=auto|on|off in the environment is the default of --cpu_kernels, and switches the
allocator settings of the commands that have no such flag (exams).

`auto` turns them on only in that setting (no GPU in use, no bf16/fp16, no FSDP/DeepSpeed, no k-bit
quantisation, the library releases in TESTED_WITH) and runs the stock Trainer and PEFT path everywhere
else; `off` is the stock path throughout; `on` forces them. The switch changes speed only: the two
changes to what is trained that were measured with these paths, an epoch-constant loss divisor and a
length-grouped sampler seeded by epoch, have their own flags (--loss_divisor, --length_sampler, whose
`auto` follows this switch). tests/unit/test_speed_switch.py trains both ways with them held equal.
"""

from __future__ import annotations

from contextlib import contextmanager

CHOICES = ("auto", "on", "off")

# The speed paths override private methods of transformers' Trainer and PEFT's LoRA layer and lean on
# torch's and accelerate's behaviour; they were written against and tested with these releases
# (major.minor). Outside them `auto` takes the stock path and says so once; `on` still forces them.
TESTED_WITH = {"torch": "2.13", "transformers": "5.25", "peft": "0.21", "accelerate": "1.16"}


def untested_versions(installed: dict[str, str] | None = None) -> list[str]:
    """The installed packages whose release differs from TESTED_WITH, as "name version" strings."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name, tested in TESTED_WITH.items():
        try:
            found = (installed or {}).get(name) or version(name)
        except PackageNotFoundError:
            continue
        if ".".join(found.split("+")[0].split(".")[:2]) != tested:
            out.append(f"{name} {found}")
    return out


_warned: set = set()


def kernels_on(cfg) -> bool:
    """Whether this training run takes the speed paths (cfg: a TrainConfig)."""
    mode = getattr(cfg.compat, "cpu_kernels", "auto")  # argparse keeps it to CHOICES
    if mode == "auto":  # the environment's choice, for every command (allocator.py)
        from ...allocator import switch_from_env

        mode = switch_from_env()
    if mode != "auto":
        return mode == "on"
    other = untested_versions()
    if other:
        key = tuple(other)
        if key not in _warned:
            _warned.add(key)
            tested = ", ".join(f"{k} {v}" for k, v in TESTED_WITH.items())
            print(f"adept: the CPU speed paths were tested with {tested}; found {', '.join(other)}: training on "
                  "the stock Trainer and PEFT path (--cpu_kernels on forces the speed paths)", flush=True)
        return False
    import torch

    t = cfg.training
    on_cpu = bool(getattr(t, "use_cpu", False)) or not torch.cuda.is_available()
    import os

    from ..cpu_fsdp import asked_for

    # FSDP or DeepSpeed named by TrainingArguments flags, or by an `accelerate launch` config (which
    # reaches the Trainer only through environment variables, accelerate 1.16)
    distributed_sharding = asked_for(t) or bool(getattr(t, "deepspeed", None)) or \
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    return on_cpu and not (t.bf16 or t.fp16) and not distributed_sharding and cfg.lora.load_in_kbits == 16


def bf16_matmul_supported() -> bool:
    """Whether this CPU has bfloat16 matrix instructions oneDNN uses (AVX512_BF16 or AMX-BF16)."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextmanager
def matmul_precision(mode: str):
    """--cpu_matmul_precision for the duration of a stage, restored after (torch 2.13's
    torch.backends.mkldnn.matmul.fp32_precision: "ieee" exact, "bf16" bfloat16 inputs with fp32
    accumulation, like TF32 on GPUs). Speed and loss: bench/RESULTS.md (SFT with --cpu_matmul_precision bf16)."""
    import torch

    from ...errors import AdeptError

    if mode == "ieee":
        yield
        return
    if not bf16_matmul_supported():
        raise AdeptError("--cpu_matmul_precision bf16 needs a CPU with bfloat16 matrix instructions "
                         "(AVX512_BF16 or AMX); this one has none: use ieee")
    old = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = mode
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = old
