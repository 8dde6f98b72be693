"""Masking-rate schedules: pure functions of training progress (no state to save or lag)."""
from __future__ import annotations

import math


def masking_rate(step: int, total_steps: int, schedule: str, start: float, end: float, step_at: float = 0.5) -> float:
    """Rate for the optimizer step that consumes the batch. `step` is clamped to [0, total_steps]."""
    if schedule == "constant" or total_steps <= 0:
        return float(start)
    p = min(max(step / total_steps, 0.0), 1.0)
    if schedule == "linear":
        return float(start + (end - start) * p)
    if schedule == "cosine":
        return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p)))
    if schedule == "step":
        return float(start if p < step_at else end)
    raise ValueError(f"unknown masking schedule '{schedule}' (constant, linear, cosine, step)")
