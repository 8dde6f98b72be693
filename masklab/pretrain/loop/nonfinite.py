"""Skipped-update bookkeeping kept on the device, so that counting needs no host read per step.

The loop calls `update(ok, step)` every step and `read()` only on log / eval / save / stop
steps. A run of `max_nan_skips` skips in a row records the step where it was reached; the loop
aborts when it next reads (at once with log_every=1), naming that step, and before any save,
so no checkpoint is written after the limit was reached.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NonFiniteCounts:
    in_a_row: int  # skipped steps in a row, ending at the latest step
    total: int  # skipped steps of the whole run (resumes included)
    abort_step: int  # first step at which `in_a_row` reached the limit; -1: not reached


class NonFiniteCounter:
    def __init__(self, device: torch.device, limit: int, total: int = 0):
        self.limit = limit
        # int64 [3]: (in a row, total, abort step or -1)
        self.t = torch.tensor([0, total, -1], dtype=torch.int64).to(device, non_blocking=True)
        self.seen_total = total  # total at the previous read (what has been reported)

    def update(self, ok: torch.Tensor, step: int) -> None:
        """`ok`: bool [] device, False = the update of `step` was skipped."""
        bad = (~ok).long()
        in_a_row = (self.t[0] + 1) * bad
        hit = torch.where((in_a_row >= self.limit) & (self.t[2] < 0), step, self.t[2])
        self.t = torch.stack([in_a_row, self.t[1] + bad, hit])

    def read(self) -> NonFiniteCounts:
        """The host read (synchronises with the device)."""
        return NonFiniteCounts(*self.t.tolist())
