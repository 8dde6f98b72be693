"""Selectors: which units of a flat batch to mask.

budget:    per sample, budget = floor(rate * n_maskable + U) tokens (unbiased rounding); units
           are taken in a uniformly random order (or, with InforMask weights, the order of
           Gumbel / exponential-race keys: weighted sampling without replacement) while they fit;
           the unit that crosses the budget is taken with probability
           (budget - tokens before it) / its length, so E[masked tokens] = rate * n exactly for
           any unit lengths (whole word, span, PMI) and token units hit floor/ceil exactly.
bernoulli: each unit independently with probability `rate` (HF's behaviour); with InforMask
           weights min(1, rate * unit weight) (the paper's token-specific rates).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from masklab.pretrain.masking import rng as R
from masklab.pretrain.masking.segment import FlatBatch

_LO16 = np.uint64(0xFFFF)


def _random_order(seq: np.ndarray, bits: np.ndarray, pos: np.ndarray, B: int, L: int) -> np.ndarray:
    """Argsort by (sample, random key): one sort of unique uint64 composites
    sample | 32 key bits | position, so ties cannot make the order depend on the batch split."""
    if B < 2**16 and L < 2**16:
        comp = (seq.astype(np.uint64) << np.uint64(48)) | ((bits >> np.uint64(32)) << np.uint64(16)) | \
            pos.astype(np.uint64)
        return np.argsort(comp)
    return np.lexsort((pos, bits, seq))


def select(fb: FlatBatch, flags: np.ndarray, rate: float, mode: str = "budget",
           token_weights: Optional[np.ndarray] = None):
    """flags bool [T] (first token of each unit) ->
    (positions int64 [M] sorted indices into [T], unit_first int64 [M] first token of each
    position's unit, n_pred int64 [B] predictions per sample)."""
    B = len(fb.lens)
    first = np.flatnonzero(flags)  # [U]
    ulen = fb.run_lengths(first)
    useq = fb.seq[first]
    upos = fb.pos[first]
    stream = fb.stream
    if mode == "bernoulli":
        p = rate if token_weights is None else np.minimum(1.0, rate * _unit_weights(fb, first, ulen, token_weights))
        chosen = np.flatnonzero(stream.uniform(R.ORDER, useq, upos) < p)
    else:
        cm = fb.cum_maskable
        n_maskable = cm[fb.starts + fb.lens] - cm[fb.starts]
        budget = np.floor(rate * n_maskable + stream.uniform(R.BUDGET, np.arange(B), np.zeros(B, np.int64)))
        bits = stream.bits(R.ORDER, useq, upos)
        if token_weights is not None:
            chosen = _weighted(fb, first, ulen, useq, upos, bits, budget, token_weights)
        else:
            # only units whose key is small can be reached before the budget: sort those alone.
            # The kept set is a prefix of the full random order, so the result is the same as
            # sorting everything whenever it covers the budget (checked; else the sample is redone)
            thr = min(1.0, 1.3 * rate + 0.04)
            cand = bits < np.uint64(min(thr * 2.0**64, 2.0**64 - 4096)) if thr < 1.0 else np.ones(len(first), bool)
            cs = useq[cand]
            got = np.bincount(cs, weights=ulen[cand], minlength=B)
            short = (got < budget) & (np.bincount(cs, minlength=B) < np.bincount(useq, minlength=B))
            if short.any():
                cand |= short[useq]
            idx = np.flatnonzero(cand)
            order = idx[_random_order(useq[idx], bits[idx], upos[idx], B, int(fb.lens.max()))]
            chosen = _take_budget(order, ulen, useq, upos, budget, stream, B)
    f, ln = first[chosen], ulen[chosen]
    n = int(ln.sum())
    unit_first = np.repeat(f, ln)
    positions = unit_first + (np.arange(n) - np.repeat(np.cumsum(ln) - ln, ln))
    n_pred = np.bincount(useq[chosen], weights=ln, minlength=B).astype(np.int64)
    return positions, unit_first, n_pred


def _take_budget(order, ulen, useq, upos, budget, stream, B) -> np.ndarray:
    """Units (indices, sorted) taken from `order` (grouped by sample, random within) by the budget."""
    lo = ulen[order]
    so = useq[order]
    csum = np.cumsum(lo)
    seg = np.searchsorted(so, np.arange(B))
    cum_incl = csum - np.concatenate([[0], csum])[seg][so]
    cum_excl = cum_incl - lo
    b = budget[so]
    take = cum_incl <= b
    crossing = np.flatnonzero((cum_excl < b) & (cum_incl > b))  # at most one per sample
    if len(crossing):
        oc = order[crossing]
        u = stream.uniform(R.CROSS, useq[oc], upos[oc])
        take[crossing] = u * lo[crossing] < (b - cum_excl)[crossing]
    return np.sort(order[take])


def _unit_weights(fb, first, ulen, token_weights) -> np.ndarray:
    """float64 [U]: mean InforMask weight of each unit's tokens."""
    w = token_weights[np.minimum(fb.tokens, len(token_weights) - 1)] * fb.maskable
    cw = np.concatenate([[0.0], np.cumsum(w)])
    return np.diff(np.append(cw[first], cw[-1])) / np.maximum(ulen, 1)


def _weighted(fb, first, ulen, useq, upos, bits, budget, token_weights) -> np.ndarray:
    """InforMask weights under the budget: key = Exp(1) / unit weight (the exponential race, i.e.
    Gumbel-top-k: sampling without replacement with probability proportional to weight)."""
    wu = _unit_weights(fb, first, ulen, token_weights)
    u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    key = -np.log1p(-u) / np.maximum(wu, 1e-12)
    order = np.lexsort((upos, key, useq))
    return _take_budget(order, ulen, useq, upos, budget, fb.stream, len(fb.lens))
