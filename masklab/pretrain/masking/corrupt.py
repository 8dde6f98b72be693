"""Corruptor: each selected token becomes [MASK], a random id, or stays, with probabilities
(mask, random, keep); drawn per token or once per unit (a word all [MASK], all random or all
kept). Random ids come from the non-special vocabulary only."""
from __future__ import annotations

import numpy as np

from masklab.pretrain.masking import rng as R
from masklab.pretrain.masking.segment import FlatBatch


def corrupt(fb: FlatBatch, positions: np.ndarray, unit_first: np.ndarray, probs: np.ndarray, mask_id: int,
            replacement_ids: np.ndarray, per_unit: bool):
    """positions int64 [M] (sorted indices into [T]), unit_first int64 [M] ->
    (corrupted ids int64 [T], labels int64 [M], is_mask bool [M] (replaced by [MASK]))."""
    out = fb.tokens.copy()
    labels = fb.tokens[positions]
    seq = fb.seq[positions]
    if probs[0] >= 1.0:  # 100% [MASK] (Wettig et al.): no draws needed
        is_mask = np.ones(len(positions), dtype=bool)
        out[positions] = mask_id
        return out, labels, is_mask
    pos = fb.pos[positions]
    # the per-unit draw is keyed by the unit's first token, so all its tokens get the same u
    u = fb.stream.uniform(R.CORRUPT, seq, fb.pos[unit_first] if per_unit else pos)
    is_mask = u < probs[0]
    is_rand = (u >= probs[0]) & (u < probs[0] + probs[1])
    out[positions[is_mask]] = mask_id
    if is_rand.any():
        r = fb.stream.uniform(R.REPLACE, seq[is_rand], pos[is_rand])
        out[positions[is_rand]] = replacement_ids[(r * len(replacement_ids)).astype(np.int64)]
    return out, labels, is_mask
