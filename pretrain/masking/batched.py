"""Batch-vectorised masking for token and whole-word units with budget selection (the hot path).

Same semantics as the per-sample Masker (units, unbiased budget with a probabilistic crossing
unit, (mask, random, keep) corruption), but every random number is a counter-based hash of
(seed, step, global sample index, position, purpose): no generator object per sample, a few
numpy passes per batch, and still identical masks however the batch is split across
micro-batches, workers or ranks.
"""
from __future__ import annotations

import numpy as np

_M = np.uint64(0xFFFFFFFFFFFFFFFF)
_C = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93,
                              0xA0761D6478BD642F, 0xE7037ED1A0B428DB)]


def uniform(seed: int, step: int, sample: np.ndarray, pos: np.ndarray, salt: int) -> np.ndarray:
    """Counter-based U[0, 1) float64, one per element of `sample`/`pos` (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed & 0xFFFFFFFF) * _C[0] + np.uint64(step & 0xFFFFFFFFFFFF) * _C[3]
             + sample.astype(np.uint64) * _C[4] + pos.astype(np.uint64) * _C[5] + np.uint64(salt) * _C[0])
        x ^= x >> np.uint64(30)
        x *= _C[1]
        x ^= x >> np.uint64(27)
        x *= _C[2]
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def mask_batch(masker, tokens: list[np.ndarray], word_starts: list[np.ndarray], sample_ids: np.ndarray,
               seed: int, step: int, rate: float):
    """-> (corrupted int64 [T], positions int64 [M] (global, sorted), labels [M], is_mask bool [M],
    predictions per sample int [B], maskable tokens in all)."""
    cfg = masker.cfg
    lens = np.array([len(t) for t in tokens])
    tok = np.concatenate(tokens).astype(np.int64)
    ws = np.concatenate(word_starts).astype(bool)
    seq = np.repeat(np.arange(len(tokens)), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    pos = np.arange(len(tok)) - np.repeat(starts, lens)
    g = np.asarray(sample_ids, dtype=np.int64)[seq]
    maskable = ~masker.special[tok]
    if cfg.unit == "token":
        unit_start = maskable
    else:  # whole word: a word never continues across an unmaskable token ([CLS]/[SEP] end samples)
        prev = np.concatenate([[False], maskable[:-1]])
        unit_start = maskable & (ws | ~prev)
    uid = np.cumsum(unit_start) - 1
    first = np.flatnonzero(unit_start)  # first token of every unit, in order
    n_units = len(first)
    ulen = np.bincount(uid[maskable], minlength=n_units)  # tokens per unit
    useq = seq[first]
    key = uniform(seed, step, g[first], pos[first], 1)
    order = np.lexsort((key, useq))  # units of each sample in random order
    csum = np.cumsum(ulen[order])
    seq_start = np.searchsorted(useq[order], np.arange(len(tokens)))
    base = np.concatenate([[0], csum])[seq_start]
    cum_incl = csum - base[useq[order]]
    cum_excl = cum_incl - ulen[order]
    n_maskable = np.bincount(seq[maskable], minlength=len(tokens))
    budget = np.floor(rate * n_maskable + uniform(seed, step, np.asarray(sample_ids), np.full(len(tokens), -1), 2))
    b = budget[useq[order]]
    chosen_sorted = cum_incl <= b
    crossing = (cum_incl > b) & (cum_excl < b)
    take = uniform(seed, step, g[first[order]], pos[first[order]], 3) * ulen[order] < (b - cum_excl)
    chosen_sorted |= crossing & take
    chosen = np.zeros(n_units, dtype=bool)
    chosen[order] = chosen_sorted
    selected = maskable & chosen[np.maximum(uid, 0)]
    positions = np.flatnonzero(selected)
    labels = tok[positions]
    upos = pos[first[uid[positions]]] if cfg.corrupt_per_unit else pos[positions]
    u = uniform(seed, step, g[positions], upos, 4)
    cut = np.cumsum(masker.probs)
    is_mask = u < cut[0]
    is_rand = (u >= cut[0]) & (u < cut[1])
    out = tok.copy()
    out[positions[is_mask]] = masker.tok.mask_id
    r = uniform(seed, step, g[positions[is_rand]], pos[positions[is_rand]], 5)
    out[positions[is_rand]] = masker.replacement_ids[(r * len(masker.replacement_ids)).astype(np.int64)]
    n_pred = np.bincount(seq[positions], minlength=len(tokens))
    return out, positions.astype(np.int64), labels, is_mask, n_pred, int(n_maskable.sum())
