"""Corruptor: (mask, random, keep) per selected token or per unit; random ids are non-special."""
from __future__ import annotations

import numpy as np


def corrupt(tokens: np.ndarray, selected: np.ndarray, unit_ids: np.ndarray, rng: np.random.Generator,
            probs: np.ndarray, mask_id: int, replacement_ids: np.ndarray, per_unit: bool):
    """-> (corrupted int64 [L], positions int64 [m], labels int64 [m], is_mask bool [m])."""
    positions = np.flatnonzero(selected)
    labels = tokens[positions].astype(np.int64)
    if per_unit:  # one draw per unit: a word is all [MASK], all random, or all kept
        u = rng.random(int(unit_ids.max()) + 1 if unit_ids.size else 0)[unit_ids[positions]]
    else:
        u = rng.random(len(positions))
    cut = np.cumsum(probs)
    is_mask = u < cut[0]
    is_rand = (u >= cut[0]) & (u < cut[1])
    out = tokens.astype(np.int64, copy=True)
    out[positions[is_mask]] = mask_id
    n_rand = int(is_rand.sum())
    if n_rand:
        out[positions[is_rand]] = replacement_ids[rng.integers(0, len(replacement_ids), n_rand)]
    return out, positions.astype(np.int64), labels, is_mask
