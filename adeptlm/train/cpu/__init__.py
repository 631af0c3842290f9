"""The CPU speed paths of training, in one room: everything here makes fp32 training on CPU faster
without changing what is trained, and most of it overrides private behaviour of a library, so it is
kept apart from the generic path and switched as one (--cpu_kernels, switch.py):

- switch.py     the switch: `auto` takes these paths only on CPU in fp32 with plain DDP or one process,
                and only with the library releases they were tested with (TESTED_WITH); otherwise the
                stock Trainer and PEFT path, with one line saying why
- trainer.py    a Trainer whose loss runs the LM head only at trained positions (transformers 5.25's
                compute_loss)
- loss.py       that head and its cross-entropy in one logits-sized buffer, in place
- lorafast.py   a fused LoRA forward (PEFT 0.21's LoRA Linear forward)
- dropout.py    LoRA dropout with a one-byte mask from NumPy's generator

The process-wide memory settings (adeptlm/allocator.py: glibc keeping freed memory, torch asking for
huge pages) serve exams as well and so live outside train/; they follow the same switch.

Each is tested against the stock path it replaces (tests/unit/test_loss.py, test_lorafast.py,
test_dropout.py, test_speed_switch.py). The two changes to *what* is trained that were measured with
these paths (the epoch-constant loss divisor, the epoch-seeded length sampler) are not here: they are
train/semantics.py, with flags of their own.
"""
