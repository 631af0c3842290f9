"""Two changes to what is trained, each with its own flag, measured first with the CPU speed paths
(cpu/) and on by default where those run (`auto`):

- --loss_divisor epoch: each optimizer step's summed loss is divided by the epoch's mean trained tokens
  per step rather than the step's own count, so every trained token weighs the same over the epoch
  however the batches were grouped by length (EpochDivisor);
- --length_sampler seeded: length-grouped batches drawn from (seed, epoch) alone, so a run resumed
  mid-epoch sees the batches an uninterrupted one would (SeededSampler).

Written against transformers 5.25's private Trainer._get_num_items_in_batch and _get_train_sampler
(cpu/switch.TESTED_WITH). tests/unit/test_speed_switch.py trains with them held equal across
--cpu_kernels on and off and compares the adapters.
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped shuffling that depends only on (seed, epoch).

    The stock sampler draws from the global RNG, whose state at an epoch's start differs between
    an uninterrupted run and one resumed mid-epoch, so the resumed run would see other batches.
    """

    def __init__(self, *args, seed: int = 0, **kw):
        super().__init__(*args, **kw)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


class EpochDivisor(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return out if return_outputs else self._stock_value(out, num_items_in_batch)

    def _stock_value(self, loss, num_items_in_batch):
        """The loss with the gradient of the epoch-constant divisor but the value the stock Trainer
        would log (the step's summed loss over the step's own trained tokens), so logged losses
        keep their usual meaning: value = loss * divisor / stock count, gradient unchanged."""
        stock = getattr(self, "_stock_items", None)
        if stock is None or num_items_in_batch is None or not self.model.training:
            return loss
        ratio = float(num_items_in_batch) / max(float(stock), 1.0)
        return loss + (loss * ratio - loss).detach()

    def _get_num_items_in_batch(self, batch_samples, device):
        """The divisor of each optimizer step's summed loss: the epoch's mean trained tokens per step.

        The stock divisor is the step's own count of trained tokens, so every step weighs the
        same and a token in a batch of short records weighs more than one in a batch of long
        records. With length-grouped batches those counts differ many-fold, which tilts training
        toward short replies. A constant divisor makes every trained token weigh the same over the
        epoch, however the batches were grouped: the epoch's gradient is that of the token-mean
        loss. Each logged step loss is still the stock one, the step's own token mean (see
        _stock_value). Its effect on held-out loss: bench/RESULTS.md (SFT against TRL).
        """
        counted = super()._get_num_items_in_batch(batch_samples, device)
        self._stock_items = None
        if counted is None or not self.model.training or self.args.n_gpu > 1:
            return counted
        if not hasattr(self, "_items_per_step"):
            self._items_per_step = _mean_items_per_step(self.train_dataset, self.args)
        if self._items_per_step is None:
            return counted
        mean = self._items_per_step
        if not (self.args.average_tokens_across_devices and self.args.world_size > 1):
            mean = mean / self.args.world_size  # each process divides its own share
        self._stock_items = counted  # what the stock Trainer divides by: the logged value uses it
        return torch.as_tensor(mean, dtype=torch.float32, device=device) if torch.is_tensor(counted) else mean


class SeededSampler(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or ds is None:
            return super()._get_train_sampler(train_dataset)
        lengths = ds["length"] if "length" in ds.column_names else [len(x) for x in ds["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                               lengths=lengths, seed=seed)


def semantics(cfg, fast: bool) -> tuple[bool, bool]:
    """(epoch-constant loss divisor, epoch-seeded sampler): as asked, or with `auto` where the CPU speed
    paths run (the setting they were measured in)."""
    divisor = getattr(cfg.compat, "loss_divisor", "auto")
    sampler = getattr(cfg.compat, "length_sampler", "auto")
    return (fast if divisor == "auto" else divisor == "epoch"), (fast if sampler == "auto" else sampler == "seeded")


def _mean_items_per_step(ds, args) -> float | None:
    """Trained tokens (labels[1:] != -100) of the whole dataset over optimizer steps per epoch."""
    if ds is None or not hasattr(ds, "column_names") or "labels" not in ds.column_names or len(ds) == 0:
        return None
    total = 0
    for batch in ds.select_columns(["labels"]).iter(batch_size=4096):
        for row in batch["labels"]:
            total += len(row) - row.count(-100) - (row[0] != -100 if row else 0)
    per_step = args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    steps = -(-len(ds) // per_step)
    return total / steps if total else None
