"""`--kl_to_base BETA`: the training loss plus BETA times KL(base ‖ tuned) at every trained token.

A brake on forgetting inside training itself: at each trained position the tuned model's next-token
distribution is pulled toward the base model's, so it learns the subject's answers while moving
the rest of its distribution as little as the data allows. The base model's distribution comes
from the same batch run a second time with the LoRA adapter disabled (no second model in memory),
as TRL's DPOTrainer computes its reference for a PEFT model. The KL is summed over trained tokens
and divided like the cross-entropy, so BETA is in the loss's own units (nats per token).

BETA = 0 leaves the trainer untouched (the flag is then not applied at all), so an adapter trained
with `--kl_to_base 0` is the adapter trained without the flag (tests/unit/test_kl_to_base.py).
"""

from __future__ import annotations


def kl_terms(model, decoder, head, inputs):
    """(summed cross-entropy, summed KL(base ‖ tuned), trained tokens) of one batch: the tuned model's
    log-probabilities with gradient, the base's (adapter disabled) without, both only at the
    positions whose label is trained."""
    import torch

    target = inputs["labels"][:, 1:]
    keep = target != -100
    kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
              position_ids=inputs.get("position_ids"), use_cache=False)
    logp = torch.log_softmax(head(decoder(**kw).last_hidden_state[:, :-1][keep]).float(), -1)
    with torch.no_grad(), model.disable_adapter():
        logp_base = torch.log_softmax(head(decoder(**kw).last_hidden_state[:, :-1][keep]).float(), -1)
    ce = -logp.gather(1, target[keep].unsqueeze(1)).sum()
    kl = (logp_base.exp() * (logp_base - logp)).sum()
    return ce, kl, int(keep.sum())


def kl_to_base_trainer(parent, beta: float):
    """A subclass of the chosen Trainer (adeptlm's or the stock one) whose loss adds beta * KL."""
    import torch

    from ..errors import AdeptError
    from .cpu.loss import decoder_and_head

    class KLToBaseTrainer(parent):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            parts = decoder_and_head(model)
            if parts is None or not hasattr(model, "disable_adapter"):
                raise AdeptError("--kl_to_base needs a LoRA adapter on a model whose logits are a plain projection "
                                 "(llama, mistral, qwen2, qwen3, gemma3 without soft-capping), unwrapped (no DDP)")
            ce, kl, n = kl_terms(model, *parts, inputs)
            loss = ce + beta * kl
            if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
                divisor = torch.as_tensor(num_items_in_batch, device=loss.device)
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            else:
                divisor = max(n, 1)
            self._kl_seen = getattr(self, "_kl_seen", (0.0, 0))
            self._kl_seen = (self._kl_seen[0] + float(kl.detach()), self._kl_seen[1] + n)
            loss = loss / divisor
            stock = getattr(self, "_stock_value", None)     # adeptlm's trainer: the logged value as the stock one's
            return stock(loss, num_items_in_batch) if stock else loss

        def log(self, logs, *args, **kw):
            total, n = getattr(self, "_kl_seen", (0.0, 0))
            if n and "loss" in logs:        # mean KL(base || tuned) per trained token since the last log
                logs["kl_to_base"] = round(total / n, 6)
                self._kl_seen = (0.0, 0)
            return super().log(logs, *args, **kw)

    return KLToBaseTrainer
