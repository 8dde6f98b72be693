"""Selectors: which units to mask.

budget:    floor(rate * n_maskable + U) tokens (unbiased rounding), units in random order; the
           unit that crosses the budget is taken with the probability that makes the expected
           masked-token count exactly rate * n (so whole-word / span / PMI rates are unbiased).
bernoulli: each unit independently with probability `rate` (HF's behaviour).
"""
from __future__ import annotations

import numpy as np


def select(unit_ids: np.ndarray, rate: float, rng: np.random.Generator, mode: str = "budget") -> np.ndarray:
    """unit_ids int64 [L] (-1 = not maskable) -> bool [L] selected tokens."""
    valid = unit_ids >= 0
    n_units = int(unit_ids.max()) + 1 if valid.any() else 0
    if n_units == 0:
        return np.zeros(unit_ids.shape, dtype=bool)
    if mode == "bernoulli":
        chosen = rng.random(n_units) < rate
    else:
        n_maskable = int(valid.sum())
        budget = int(np.floor(rate * n_maskable + rng.random()))
        lengths = np.bincount(unit_ids[valid], minlength=n_units)
        order = rng.permutation(n_units)
        cum = np.cumsum(lengths[order])
        k = int(np.searchsorted(cum, budget, side="right"))  # units fully inside the budget
        chosen = np.zeros(n_units, dtype=bool)
        chosen[order[:k]] = True
        before = int(cum[k - 1]) if k > 0 else 0
        if k < n_units and before < budget:
            # the crossing unit, with probability (budget - before) / its length: E[masked] = budget
            if rng.random() * lengths[order[k]] < budget - before:
                chosen[order[k]] = True
    return valid & chosen[np.maximum(unit_ids, 0)]
