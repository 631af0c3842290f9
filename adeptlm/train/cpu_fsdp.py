"""FSDP on CPU processes (gloo), which accelerate does not turn on by itself.

Written against accelerate 1.16.0 and transformers 5.24.0. Asked for FSDP (an `accelerate launch`
FSDP config, or the Trainer's --fsdp flags) on CPU processes, accelerate's AcceleratorState becomes
MULTI_CPU and never FSDP (FSDP is enabled there only for GPU-like device types), so the run is plain
DDP: every process holds the whole model. torch's FSDP2 (`fully_shard`) does shard over gloo on
the CPU, so `enable` sets the state the Trainer just made to FSDP with the plugin that was asked
for, before the model is prepared. Behind --cpu_fsdp (auto: on exactly when FSDP was asked for and
the processes are CPU ones; off: accelerate's own behaviour); tests/unit/test_scale_out.py trains
both ways and compares the losses.
"""

from __future__ import annotations

import os


def asked_for(args) -> bool:
    """FSDP named by the Trainer's --fsdp flags or by an `accelerate launch` FSDP config."""
    return bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def enable(trainer, mode: str = "auto") -> bool:
    """Turn the trainer's MULTI_CPU accelerator state into FSDP; returns whether it did."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if mode == "off" or state.distributed_type != DistributedType.MULTI_CPU or not asked_for(trainer.args):
        return False
    plugin_args = getattr(trainer.args, "fsdp_plugin_args", None)
    # with no Trainer flags the plugin reads the FSDP_* variables that accelerate launch sets
    plugin = FullyShardedDataParallelPlugin(**plugin_args) if plugin_args else FullyShardedDataParallelPlugin()
    from accelerate.state import PartialState

    # both shared states: every later AcceleratorState() copies PartialState's distributed_type over its own
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    trainer.is_fsdp_enabled = True
    return True
