"""Memory allocator settings for training and scoring on CPU.

The commands that train or score (pt, sft, dpo, eval exam/ppl, run) call keep_freed_memory() first;
long-lived servers do not, so they can hand memory back between requests. Every `adept` command asks
for huge pages (ask_for_huge_pages) before anything else, as torch reads that choice only once.
"""

from __future__ import annotations

import os


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

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_TRIM_THRESHOLD, -1)) and bool(mallopt(M_MMAP_MAX, 0))


def ask_for_huge_pages() -> None:
    """Have torch madvise(MADV_HUGEPAGE) its CPU buffers of 2 MB and more.

    Even with freed memory kept, a run touches every page of its peak memory once, mostly in its
    first step: the SFT bench's 64-record run here took 2.3-2.4 million 4 KB page faults and 19-21 s
    of system CPU. With 2 MB pages the faults fall to 0.8 million, the system CPU to 14.5-15.5 s,
    and the run is 2-3% faster (bench/RESULTS.md). torch reads THP_MEM_ALLOC_ENABLE once, at its first CPU
    allocation (c10/core/alloc_cpu.cpp, torch 2.13), so this must run before any tensor is made
    (importing transformers' training stack already makes some); afterwards it changes nothing.
    A value the user has set (THP_MEM_ALLOC_ENABLE=0) is kept. Where the kernel's transparent huge
    pages are off ("never"), the advice is ignored.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
