"""Memory allocator settings for training and scoring on CPU, applied only where measured to help.

The commands that train with the CPU speed paths (train/cpu/) or score (eval exam/ppl, run) call
keep_freed_memory() first; long-lived servers do not, so they can hand memory back between requests.
The training commands (a stage, or `adept run`) ask for huge pages (ask_for_huge_pages) before
anything else, as torch reads that choice only once; it was measured on training, not on exams.

Both follow the CPU speed switch: `--cpu_kernels off` on a training command, or ADEPT_CPU_KERNELS=off
in the environment for every command, leaves the allocator and torch's defaults alone.
"""

from __future__ import annotations

import os

SWITCH_ENV = "ADEPT_CPU_KERNELS"  # auto | on | off: --cpu_kernels's default, and these settings' switch


def switch_from_env() -> str:
    """The environment's setting of the CPU speed switch: auto (also when unset or unreadable), on or off."""
    value = os.environ.get(SWITCH_ENV, "auto").strip().lower()
    return value if value in ("auto", "on", "off") else "auto"


def switched_off(argv: list[str] | None = None) -> bool:
    """Whether the CPU speed switch is off: in the environment, or by --cpu_kernels off in argv."""
    if switch_from_env() == "off":
        return True
    argv = argv or []
    return any(a == "--cpu_kernels=off" or (a == "--cpu_kernels" and argv[i + 1:i + 2] == ["off"])
               for i, a in enumerate(argv))


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    By default glibc serves large blocks (over 128 KB, a threshold that adapts up to 32 MB) with
    fresh mmaps, so each step's activations land on new pages that the kernel must fault in and
    zero: a sizeable share of a LoRA step and of an exam on CPU. With mmap off and trimming off,
    freed blocks are reused, and peak RSS stays close to the default's (bench/RESULTS.md, "Memory").
    A no-op away from glibc (returns False).

    Trimming is off altogether (-1, as mallopt(3) documents), not merely raised: with a 1 GB
    threshold, gemma3-270m's logits (a [tokens, 262144] fp32 block is about 1 GB at 1,000
    tokens) freed at the heap's top were handed back and faulted in again every step, which showed
    as system CPU time in every PT step (bench/RESULTS.md). The process keeps its peak heap until
    it exits, which is what a training or scoring run wants.
    """
    import ctypes
    import ctypes.util

    if switched_off():
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_TRIM_THRESHOLD, -1)) and bool(mallopt(M_MMAP_MAX, 0))


def ask_for_huge_pages(argv: list[str] | None = None, training: tuple[str, ...] = ()) -> bool:
    """Have torch madvise(MADV_HUGEPAGE) its CPU buffers of 2 MB and more, for a command that trains
    (argv's first word in `training`) unless the switch is off; returns whether it asked.

    Even with freed memory kept, a run touches every page of its peak memory once, mostly in its
    first step: the SFT bench's 64-record run here took 2.3-2.4 million 4 KB page faults and 19-21 s
    of system CPU. With 2 MB pages the faults fall to 0.8 million, the system CPU to 14.5-15.5 s,
    and the run is 2-3% faster (bench/RESULTS.md). torch reads THP_MEM_ALLOC_ENABLE once, at its first CPU
    allocation (c10/core/alloc_cpu.cpp, torch 2.13), so this must run before any tensor is made
    (importing transformers' training stack already makes some); afterwards it changes nothing.
    A value the user has set (THP_MEM_ALLOC_ENABLE=0) is kept. Where the kernel's transparent huge
    pages are off ("never"), the advice is ignored.
    """
    words = [a for a in (argv or []) if a != "--debug"]
    if not words or words[0] not in training or switched_off(words):
        return False
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return True
