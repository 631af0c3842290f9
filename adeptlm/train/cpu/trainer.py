"""The Trainer's loss with the LM head only at trained positions (a CPU speed path: __init__.py).

Written against transformers 5.25's Trainer.compute_loss (switch.TESTED_WITH); the stock method runs
whenever the model or the call is not the plain case.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from .loss import decoder_and_head, head_cross_entropy


class TrainedPositionsLoss(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The LM head and cross-entropy only where a label is trained.

        The stock path projects every position (prompt, padding) onto the whole vocabulary (49,152
        for the embedded model) and then ignores most of it; here the decoder's hidden states are
        gathered at the trained positions first. Same loss, same reduction as the model's own
        (sum / num_items_in_batch; else the mean). Models whose head does more than a projection,
        and DDP-wrapped models (their forward must run through the wrapper), take the stock path.
        """
        parts = decoder_and_head(model)
        if return_outputs or parts is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        decoder, head = parts
        target = inputs["labels"][:, 1:]
        keep = target != -100
        hidden = decoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                         position_ids=inputs.get("position_ids"), use_cache=False).last_hidden_state
        loss = head_cross_entropy(hidden[:, :-1][keep], head, target[keep])
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        else:
            loss = loss / max(int(keep.sum()), 1)
        return loss
