"""Two brakes on forgetting inside training, both against the base model with the LoRA adapter
disabled (no second model in memory, as TRL's DPOTrainer computes its reference for a PEFT model):

- `--kl_to_base BETA`: the training loss plus BETA times KL(base ‖ tuned) at every trained token.
  At each trained position the tuned model's next-token distribution is pulled toward the base's,
  so it learns the subject's answers while moving the rest of its distribution as little as the
  data allows. The KL is summed over trained tokens and divided like the cross-entropy, so BETA is
  in the loss's own units (nats per token).
- `--distill_file FILE` (SFT) with `--distill_weight W`: records of general text (the base model's
  own answers to general questions) that are not trained on their words at all: at every position
  of each such record the tuned model's next-token distribution is pulled toward the base's, and W
  times the mean KL(base ‖ tuned) per distilled position joins the loss. This is Learning without
  Forgetting (Li & Hoiem 2016; Hinton et al.'s distillation with the base model as the teacher):
  the whole distribution is kept, near-ties included, on inputs like those the user still asks,
  where cross-entropy on the base's greedy words (replay) only keeps its first choices. The
  subject's records keep their cross-entropy, so the adapter learns the subject and is held to the
  base everywhere else.

BETA = 0 without a distill file leaves the trainer untouched (nothing here is applied), so an
adapter trained with `--kl_to_base 0` is the adapter trained without the flag
(tests/unit/test_kl_to_base.py).
"""

from __future__ import annotations


def kl_terms(model, decoder, head, inputs, distill=None, trained_kl: bool = True):
    """(summed cross-entropy, summed KL(base ‖ tuned) at trained tokens, trained tokens) of one batch:
    the tuned model's log-probabilities with gradient, the base's (adapter disabled) without, both
    only at the positions whose label is trained. With `distill` (a 0/1 mask over positions, batch x
    length), also (summed KL at the distilled positions, their count), each position's distribution
    being that of the token after it. trained_kl=False skips the KL at trained tokens (returned as 0):
    with --kl_to_base 0 only the distilled positions need the base's head."""
    import torch

    target = inputs["labels"][:, 1:]
    keep = target != -100
    kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
              position_ids=inputs.get("position_ids"), use_cache=False)
    hidden = decoder(**kw).last_hidden_state
    logp = torch.log_softmax(head(hidden[:, :-1][keep]).float(), -1)
    with torch.no_grad(), model.disable_adapter():
        base_hidden = decoder(**kw).last_hidden_state
    ce = -logp.gather(1, target[keep].unsqueeze(1)).sum()
    kl = ce.new_zeros(())
    if trained_kl:
        logp_base = torch.log_softmax(head(base_hidden[:, :-1][keep]).float(), -1)
        kl = (logp_base.exp() * (logp_base - logp)).sum()
    if distill is None:
        return ce, kl, int(keep.sum())
    at = distill.bool()
    dt, db = torch.log_softmax(head(hidden[at]).float(), -1), torch.log_softmax(head(base_hidden[at]).float(), -1)
    return ce, kl, int(keep.sum()), (db.exp() * (db - dt)).sum(), int(at.sum())


def kl_to_base_trainer(parent, beta: float, distill_weight: float = 0.0):
    """A subclass of the chosen Trainer (adeptlm's or the stock one) whose loss adds beta * KL at the
    trained tokens and distill_weight * the mean KL at the distilled positions of the batch."""
    import torch

    from ..errors import AdeptError
    from .cpu.loss import decoder_and_head

    class KLToBaseTrainer(parent):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            distill = inputs.pop("distill", None)
            if distill is not None and not distill.any():
                distill = None
            if return_outputs or "labels" not in inputs or (not beta and distill is None):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            parts = decoder_and_head(model)
            if parts is None or not hasattr(model, "disable_adapter"):
                raise AdeptError("--kl_to_base and --distill_file need a LoRA adapter on a model whose logits are a "
                                 "plain projection (llama, mistral, qwen2, qwen3, gemma3 without soft-capping), "
                                 "unwrapped (no DDP)")
            terms = kl_terms(model, *parts, inputs, distill, trained_kl=bool(beta))
            ce, kl, n = terms[:3]
            loss = ce + beta * kl
            if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
                divisor = torch.as_tensor(num_items_in_batch, device=loss.device)
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            else:
                divisor = max(n, 1)
            if beta:
                self._kl_seen = getattr(self, "_kl_seen", (0.0, 0))
                self._kl_seen = (self._kl_seen[0] + float(kl.detach()), self._kl_seen[1] + n)
            # a batch of distilled records alone trains no token: its cross-entropy part is 0, not 0/0
            loss = loss / divisor if n else loss * 0.0
            stock = getattr(self, "_stock_value", None)     # adeptlm's trainer: the logged value as the stock one's
            loss = stock(loss, num_items_in_batch) if (stock and n) else loss
            if distill is not None:
                dkl, dn = terms[3:]
                self._distill_seen = getattr(self, "_distill_seen", (0.0, 0))
                self._distill_seen = (self._distill_seen[0] + float(dkl.detach()), self._distill_seen[1] + dn)
                loss = loss + distill_weight * dkl / dn
            return loss

        def log(self, logs, *args, **kw):
            if "loss" in logs:
                for key, attr in (("kl_to_base", "_kl_seen"), ("distill_kl", "_distill_seen")):
                    total, n = getattr(self, attr, (0.0, 0))
                    if n:       # mean KL(base || tuned) per token since the last log
                        logs[key] = round(total / n, 6)
                        setattr(self, attr, (0.0, 0))
            return super().log(logs, *args, **kw)

    return KLToBaseTrainer
