"""Compatibility shim: the batch path now lives in `Masker.mask_batch` (masker.py), which runs
every unit kind and selector vectorised over the whole batch."""
from __future__ import annotations

import numpy as np


def mask_batch(masker, tokens: list[np.ndarray], word_starts: list[np.ndarray], sample_ids: np.ndarray,
               seed: int, step: int, rate: float):
    """-> (corrupted int64 [T], positions int64 [M] (global, sorted), labels [M], is_mask bool [M],
    predictions per sample int [B], maskable tokens in all)."""
    m = masker.mask_batch(tokens, word_starts, sample_ids, seed, step, rate)
    return m.input_ids, m.positions, m.labels, m.is_mask_token, m.num_predictions, m.num_maskable
