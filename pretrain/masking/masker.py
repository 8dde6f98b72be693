"""Per-sample masking: segment into units -> select a budget of units -> corrupt tokens.

Randomness is counter-based: each sample's generator is seeded by (seed, step, global
sample index), so masks do not depend on workers, ranks or resume points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.tokenizer import TokenizerInfo

EVAL_STREAM = 2**31 - 1  # the `step` slot used for evaluation batches: disjoint from training


@dataclass
class MaskedSample:
    input_ids: np.ndarray  # int64 [L] corrupted
    positions: np.ndarray  # int64 [m] sorted, within the sample
    labels: np.ndarray  # int64 [m] original ids
    is_mask_token: np.ndarray  # bool [m] replaced by [MASK] (late insertion removes these)
    num_maskable: int


def sample_rng(seed: int, step: int, sample_index: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[seed & 0xFFFFFFFFFFFFFFFF, 0],
                                                counter=[0, 0, step & 0xFFFFFFFFFFFFFFFF, sample_index]))


class Masker:
    """Token / whole-word units, budget or Bernoulli selection, (mask, random, keep) corruption."""

    def __init__(self, cfg, tok: TokenizerInfo):
        self.cfg = cfg
        self.tok = tok
        self.special = np.zeros(max(tok.vocab_size, max(tok.special_ids) + 1), dtype=bool)
        self.special[list(tok.special_ids)] = True
        # random replacements come from real, non-special vocabulary only
        self.replacement_ids = np.flatnonzero(~self.special[: tok.vocab_size]).astype(np.int64)
        self.probs = np.array([cfg.mask_prob, cfg.random_prob, cfg.keep_prob], dtype=np.float64)

    def units(self, tokens: np.ndarray, word_starts: np.ndarray, maskable: np.ndarray) -> np.ndarray:
        """-> int64 [L] unit id per token (-1 = not maskable); units are contiguous runs."""
        if self.cfg.unit == "token":
            starts = maskable.copy()
        elif self.cfg.unit == "whole_word":
            starts = maskable & ((word_starts != 0) | ~np.concatenate([[False], maskable[:-1]]))
        else:
            raise ValueError(f"masking.unit='{self.cfg.unit}' needs the full masking package")
        ids = np.cumsum(starts) - 1
        return np.where(maskable, ids, -1)

    def select(self, unit_ids: np.ndarray, n_units: int, rate: float, rng: np.random.Generator) -> np.ndarray:
        """-> bool [L] selected tokens."""
        valid = unit_ids >= 0
        n_maskable = int(valid.sum())
        if n_units == 0:
            return np.zeros_like(valid)
        if self.cfg.selector == "bernoulli":
            chosen = rng.random(n_units) < rate
        else:
            budget = int(np.floor(rate * n_maskable + rng.random()))  # unbiased rounding
            lengths = np.bincount(unit_ids[valid], minlength=n_units)
            order = rng.permutation(n_units)
            # take units in random order until the token budget is met (the last may overshoot)
            k = int(np.searchsorted(np.cumsum(lengths[order]), budget, side="left")) + 1 if budget > 0 else 0
            chosen = np.zeros(n_units, dtype=bool)
            chosen[order[:min(k, n_units)]] = True
        return valid & chosen[np.maximum(unit_ids, 0)]

    def corrupt(self, tokens: np.ndarray, selected: np.ndarray, unit_ids: np.ndarray, rng: np.random.Generator):
        positions = np.flatnonzero(selected)
        labels = tokens[positions].astype(np.int64)
        if self.cfg.corrupt_per_unit:
            u_units = rng.random(int(unit_ids.max()) + 1 if unit_ids.size else 0)
            u = u_units[unit_ids[positions]]
        else:
            u = rng.random(len(positions))
        cut = np.cumsum(self.probs)
        is_mask = u < cut[0]
        is_rand = (u >= cut[0]) & (u < cut[1])
        out = tokens.astype(np.int64, copy=True)
        out[positions[is_mask]] = self.tok.mask_id
        n_rand = int(is_rand.sum())
        if n_rand:
            out[positions[is_rand]] = self.replacement_ids[rng.integers(0, len(self.replacement_ids), n_rand)]
        return out, positions.astype(np.int64), labels, is_mask

    def mask_sample(self, tokens: np.ndarray, word_starts: np.ndarray, rng: np.random.Generator,
                    rate: float) -> MaskedSample:
        """tokens: int64 [L] with [CLS]/[SEP]; word_starts: uint8 [L] (1 at specials too)."""
        maskable = ~self.special[tokens]
        unit_ids = self.units(tokens, word_starts, maskable)
        n_units = int(unit_ids.max()) + 1 if maskable.any() else 0
        selected = self.select(unit_ids, n_units, rate, rng)
        out, positions, labels, is_mask = self.corrupt(tokens, selected, unit_ids, rng)
        return MaskedSample(out, positions, labels, is_mask, int(maskable.sum()))
