"""`adept sft`'s training arguments: transformers' TrainingArguments plus --padding_free, SFT's own
(TRL's SFTConfig and DPOConfig carry a padding_free of their own, so the option lives with the stage's
config class rather than beside the shared data options, where the two would clash in one parser).
A module of its own so that the Trainer can pickle the arguments into its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class SFTArguments(TrainingArguments):
    padding_free: bool = field(default=False, metadata={
        "help": "lay each batch's records end to end in one row, position ids restarting at each record, so no "
                "padding is computed; transformers derives each record's own causal attention from the position ids "
                "(with flash attention, its variable-length kernels). The same loss as padded batches"})
