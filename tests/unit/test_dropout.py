"""FastDropout (LoRA's input dropout on CPU) keeps nn.Dropout's distribution, gradient and seeding."""

from __future__ import annotations

import platform

import pytest
import torch

from adeptlm.allocator import keep_freed_memory
from adeptlm.train.cpu.dropout import FastDropout, use_fast_dropout


def test_drops_a_fraction_p_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 1.0  # no zeros, so a zero in the output is a dropped element
    drop = FastDropout(0.05).train()
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    # binomial standard deviation sqrt(0.05 * 0.95 / 1e6) = 2.2e-4
    assert abs(dropped - 0.05) < 1.5e-3
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * (1 / 0.95))
    # masks of consecutive calls differ, as independent draws do
    assert not torch.equal(drop(x) == 0, y == 0)


def test_small_probability_draws_32_bits_and_keeps_its_rate():
    # 16-bit draws would round p = 0.001 to 66 / 65536 = 0.00101 (1% off); below 1/128 32 bits are drawn
    torch.manual_seed(0)
    drop = FastDropout(0.001).train()
    assert drop.bits == 32 and FastDropout(0.05).bits == 16
    dropped = (drop(torch.ones(2000, 1000)) == 0).float().mean().item()
    assert abs(dropped - 0.001) < 1.5e-4  # binomial sd over 2M draws: 2.2e-5


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 48, requires_grad=True)
    y = FastDropout(0.25).train()(x)
    (y * 3.0).sum().backward()
    keep = y.detach() != 0
    expected = keep.float() * 3.0 / 0.75
    assert torch.allclose(x.grad, expected)


def test_same_torch_seed_same_mask_and_eval_is_identity():
    x = torch.ones(300, 300)
    drop = FastDropout(0.1).train()
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    b = drop(x)
    torch.manual_seed(8)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(drop.eval()(x), x)


def test_bad_probability_is_refused():
    with pytest.raises(ValueError):
        FastDropout(0.0)
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_swaps_every_lora_dropout_of_a_peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    layers = model.config.num_hidden_layers
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    peft.train()
    assert use_fast_dropout(peft) == 3 * layers
    fast = [m for m in peft.modules() if isinstance(m, FastDropout)]
    assert len(fast) == 3 * layers and all(m.p == 0.1 and m.training for m in fast)
    assert not any(type(m) is torch.nn.Dropout for m in peft.modules())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    peft(input_ids=ids).logits.sum().backward()  # forward and backward run through the new modules
    # an adapter without dropout (nn.Identity) is left alone
    plain = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=["q_proj"]))
    assert use_fast_dropout(plain) == 0


glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")


@glibc_only
def test_keep_freed_memory_on_glibc():
    assert keep_freed_memory() is True
    assert torch.ones(4096, 4096).sum().item() == 4096 * 4096  # large allocations still work


REUSE_PROBE = """
import ctypes, resource
from adeptlm.allocator import keep_freed_memory
assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 1200 << 20  # over the old 1 GB trim threshold, freed at the heap's top
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    libc.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(*faults)
"""


@glibc_only
def test_freed_gigabytes_are_reused_not_faulted_in_again():
    """A block over 1 GB freed at the heap's top (gemma3-270m's logits) is kept: allocating it again
    touches no new pages. With trimming at 1 GB, the second allocation faulted all 307k 4 KB pages
    in again, as the first did."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", REUSE_PROBE], capture_output=True, text=True, check=True)
    first, again = map(int, out.stdout.split())
    assert first > 200_000 and again < 1_000, out.stdout


HUGE_PAGE_PROBE = """
import contextlib, io, sys
from adeptlm.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
import torch
x = torch.ones(64 << 20)  # 256 MB, touched
print(sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages:")))
"""


@pytest.mark.parametrize("command,setting,huge", [
    (["sft", "--help"], None, True),
    (["sft", "--help"], "0", False),                  # the user's THP_MEM_ALLOC_ENABLE=0 is kept
    (["sft", "--cpu_kernels", "off", "--help"], None, False),   # the speed switch off
    (["models"], None, False),                        # measured on training only
])
def test_adept_asks_torch_for_huge_pages_for_training_unless_told_not_to(command, setting, huge):
    """`adept <stage>` sets THP_MEM_ALLOC_ENABLE before torch's first allocation, so a large tensor lands
    on 2 MB pages; a user's THP_MEM_ALLOC_ENABLE=0 is kept, --cpu_kernels off asks for none, and a
    command that does not train leaves torch's default. Only provable where the kernel gives huge
    pages on madvise alone (mode "madvise"): with "always" every buffer gets them, with "never" none."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.is_file() or "[madvise]" not in mode.read_text():
        pytest.skip("transparent huge pages are not in madvise mode here")
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "ADEPT_CPU_KERNELS")}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE, *command], env=env, capture_output=True, text=True,
                         check=True)
    huge_kb = int(out.stdout.split()[-1])
    if huge:
        assert huge_kb >= 2048, out.stdout
    else:
        assert huge_kb == 0, out.stdout
