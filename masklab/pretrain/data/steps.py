"""Which global units each optimizer step consumes, split into this rank's micro-batches.

A plan item is (step, ((first, count), ...)): this rank's micro-batches as ranges of global unit
counters. Two budgets:
- samples (`data.batch_size`): step s takes units [s*B, (s+1)*B); micro-batch a of rank r is
  [s*B + (a*world + r)*mb, ... + mb). Random access: position(s) = s*B.
- tokens (`data.batch_tokens` > 0): step s takes the longest run of units from the cursor whose
  tokens fit in batch_tokens (at least one), then cuts it into K = world * accum contiguous groups
  by token offset (unit i goes to group floor(offset_i * K / step tokens)); group a*world + r is
  rank r's micro-batch a. The step's units do not depend on K, so any split (ranks, accumulation)
  trains on the same batch. The cursor is sequential: the sampler walks it in the main process
  and records it per step; checkpoints store it as the data position and a resume starts there.
Both are deterministic and independent of DataLoader workers (they only collate the plan).
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from masklab.errors import ConfigError
from masklab.pretrain.batch import UnpaddedBatch

Plan = tuple[int, tuple[tuple[int, int], ...]]


class SampleBudget:
    def __init__(self, batch_size: int, micro_batch_size: int, rank: int = 0, world: int = 1):
        if batch_size % (micro_batch_size * world):
            raise ConfigError(f"data.batch_size={batch_size} is not divisible by micro_batch_size="
                              f"{micro_batch_size} x world_size={world}")
        self.B, self.mb, self.rank, self.world = batch_size, micro_batch_size, rank, world
        self.accum = batch_size // (micro_batch_size * world)
        self.micro_samples, self.global_samples = micro_batch_size, batch_size  # DeepSpeed's bookkeeping

    def plan(self, step: int) -> Plan:
        firsts = (step * self.B + (a * self.world + self.rank) * self.mb for a in range(self.accum))
        return step, tuple((f, self.mb) for f in firsts)

    def plans(self, start: int, stop: int, position: int) -> Iterator[Plan]:
        for s in range(start, stop):
            yield self.plan(s)

    def position(self, step: int) -> int:
        return step * self.B


class TokenBudget:
    def __init__(self, collator, batch_tokens: int, micro_batch_tokens: int, rank: int = 0, world: int = 1):
        seq_len = collator.cfg.data.seq_len
        if batch_tokens % (micro_batch_tokens * world):
            raise ConfigError(f"data.batch_tokens={batch_tokens} is not divisible by micro_batch_tokens="
                              f"{micro_batch_tokens} x world_size={world}")
        self.accum = batch_tokens // (micro_batch_tokens * world)
        self.K = self.accum * world
        self.micro_samples, self.global_samples = 1, self.K  # DeepSpeed counts micro-batches, not samples
        if batch_tokens < (self.K + 1) * seq_len:  # then every group gets at least one unit
            raise ConfigError(f"data.batch_tokens={batch_tokens} must be >= (micro-batches per step {self.K} + 1) x "
                              f"data.seq_len={seq_len}: raise it or data.micro_batch_tokens")
        self.c, self.T, self.rank, self.world = collator, batch_tokens, rank, world
        n = len(collator.samples)
        mean = max(1.0, float(collator.unit_lengths(0, min(n, 4096)).mean()))
        self.guess = int(1.5 * batch_tokens / mean) + 16
        self._positions: dict[int, int] = {}

    def split(self, cursor: int) -> tuple[int, list[tuple[int, int]]]:
        """-> (units the step at `cursor` takes, all K groups as (first, count))."""
        m = self.guess
        while True:
            lens = self.c.unit_lengths(cursor, m)
            cum = np.cumsum(lens)
            if cum[-1] > self.T:
                break
            m *= 2
        n = max(1, int(np.searchsorted(cum, self.T, side="right")))
        offsets = cum[:n] - lens[:n]
        group = offsets * self.K // int(cum[n - 1])
        counts = np.bincount(group, minlength=self.K)
        firsts = cursor + np.concatenate([[0], np.cumsum(counts)[:-1]])
        return n, list(zip(firsts.tolist(), counts.tolist()))

    def plans(self, start: int, stop: int, position: int) -> Iterator[Plan]:
        cursor = position
        for s in range(start, stop):
            self._remember(s, cursor)
            n, groups = self.split(cursor)
            cursor += n
            self._remember(s + 1, cursor)
            yield s, tuple(groups[a * self.world + self.rank] for a in range(self.accum))

    def _remember(self, step: int, cursor: int) -> None:
        self._positions[step] = cursor
        self._positions.pop(step - 4096, None)  # the loader runs a few steps ahead of training at most

    def position(self, step: int) -> int:
        """The cursor at the start of `step` (a step the sampler has reached)."""
        return self._positions[step]


def make_budget(collator, cfg, rank: int, world: int):
    d = cfg.data
    if d.batch_tokens:
        return TokenBudget(collator, d.batch_tokens, d.micro_batch_tokens or d.batch_tokens // world, rank, world)
    return SampleBudget(d.batch_size, d.micro_batch_size or d.batch_size // world, rank, world)


class StepDataset(torch.utils.data.Dataset):
    """Item: a step (sample budgets) or a plan from the sampler -> this rank's micro-batches (a list).
    `budget` (from make_budget) defaults to SampleBudget(batch_size, micro_batch_size, rank, world)."""

    def __init__(self, collator, batch_size: int = 0, micro_batch_size: int = 0, rank: int = 0, world: int = 1,
                 budget=None):
        self.c = collator
        self.budget = budget or SampleBudget(batch_size, micro_batch_size, rank, world)
        self.accum = self.budget.accum

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, item) -> list[UnpaddedBatch]:
        step, ranges = self.budget.plan(item) if isinstance(item, int) else item
        return [self.c(np.arange(f, f + n, dtype=np.int64), step) for f, n in ranges]


class StepSampler(torch.utils.data.Sampler):
    def __init__(self, budget, start: int, stop: int, position: int):
        self.budget, self.start, self.stop, self.position0 = budget, start, stop, position

    def __iter__(self):
        return self.budget.plans(self.start, self.stop, self.position0)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def position(self, step: int) -> int:
        return self.budget.position(step)


def _identity(x):
    return x


def step_loader(dataset: StepDataset, start: int, stop: int, num_workers: int = 0, pin: bool = False,
                position: Optional[int] = None):
    """Batches of steps [start, stop); `position`: the data position of `start` (from the checkpoint)."""
    pos = dataset.budget.position(start) if position is None and isinstance(dataset.budget, SampleBudget) else position
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=StepSampler(dataset.budget, start, stop, pos or 0),
                                       num_workers=num_workers, collate_fn=_identity, pin_memory=pin,
                                       persistent_workers=False, prefetch_factor=4 if num_workers else None)
