"""Masker: Segmenter -> Selector -> Corruptor over a whole batch at once (the collator is the
Emitter, see pretrain.data.make_batch).

Every random number is a counter-based hash of (seed, step, global sample index, position,
purpose) (pretrain.masking.rng), so a sample's masks are the same whatever the worker, rank,
micro-batch split or resume point. The batch path is a few numpy passes over the T tokens
and U units of the batch: no per-token or per-unit Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from masklab.data_prep.tokenizer import TokenizerInfo
from masklab.pretrain.masking.corrupt import corrupt
from masklab.pretrain.masking.rng import Stream
from masklab.pretrain.masking.segment import FlatBatch, segment
from masklab.pretrain.masking.select import select

EVAL_STREAM = 2**31 - 1  # the `step` slot of evaluation batches: disjoint from training steps


@dataclass
class MaskedSample:
    input_ids: np.ndarray  # int64 [L] corrupted
    positions: np.ndarray  # int64 [m] sorted, within the sample
    labels: np.ndarray  # int64 [m] original ids
    is_mask_token: np.ndarray  # bool [m] replaced by [MASK] (late insertion removes these)
    num_maskable: int


@dataclass
class MaskedBatch:
    input_ids: np.ndarray  # int64 [T] corrupted, samples concatenated
    positions: np.ndarray  # int64 [M] sorted indices into [T]
    labels: np.ndarray  # int64 [M] original ids
    is_mask_token: np.ndarray  # bool [M]
    num_predictions: np.ndarray  # int64 [B] per sample
    num_maskable: int  # maskable tokens in the batch (realised rate = M / this)
    lens: np.ndarray  # int64 [B]
    position_ids: np.ndarray  # int64 [T] position inside each sample


def sample_rng(seed: int, step: int, sample_index: int) -> np.random.Generator:
    """A generator keyed by (seed, step, sample): for callers of `mask_sample`."""
    return np.random.Generator(np.random.Philox(key=[seed & 0xFFFFFFFFFFFFFFFF, 0],
                                                counter=[0, 0, step & 0xFFFFFFFFFFFFFFFF, sample_index]))


class Masker:
    """Built by `build_masker` (which checks what the strategy needs at start-up)."""

    def __init__(self, cfg, tok: TokenizerInfo, pmi: Optional[object] = None,
                 token_weights: Optional[np.ndarray] = None):
        # a plain namespace: OmegaConf attribute access costs microseconds in the hot path
        self.cfg = SimpleNamespace(**OmegaConf.to_container(cfg)) if isinstance(cfg, DictConfig) else cfg
        self.tok = tok
        self.pmi = pmi
        self.token_weights = token_weights  # float64 [V] (InforMask) or None
        self.special = np.zeros(max(tok.vocab_size, max(tok.special_ids) + 1), dtype=bool)
        self.special[list(tok.special_ids)] = True
        # random replacements come from real, non-special vocabulary only
        self.replacement_ids = np.flatnonzero(~self.special[: tok.vocab_size]).astype(np.int64)
        self.probs = np.array([self.cfg.mask_prob, self.cfg.random_prob, self.cfg.keep_prob], dtype=np.float64)

    # ---- the batch path (what the Collator calls) ----
    def flat(self, tokens: np.ndarray, word_starts: np.ndarray, lens: np.ndarray, sample_ids: np.ndarray,
             seed: int, step: int) -> FlatBatch:
        """tokens int [T] (samples concatenated, [CLS]/[SEP] included), word_starts uint8/bool [T],
        lens int [B], sample_ids int64 [B] global sample indices."""
        tokens = np.asarray(tokens, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        starts = np.cumsum(lens) - lens
        seq = np.repeat(np.arange(len(lens)), lens)
        pos = np.arange(len(tokens)) - np.repeat(starts, lens)
        return FlatBatch(tokens, np.asarray(word_starts).astype(bool, copy=False), ~self.special[tokens], seq, pos,
                         starts, lens, Stream(seed, step, sample_ids))

    def unit_flags(self, fb: FlatBatch) -> np.ndarray:
        """bool [T]: first token of every unit (Segmenter); a unit never spans an unmaskable token."""
        flags = segment(self.cfg.unit, fb, self)
        if self.cfg.unit in ("span", "pmi"):  # [UNK] inside a span/n-gram splits it
            prev = np.concatenate([[False], fb.maskable[:-1]])
            flags = flags | (fb.maskable & ~prev)
        return flags

    def mask_flat(self, tokens, word_starts, lens, sample_ids, seed: int, step: int, rate: float) -> MaskedBatch:
        fb = self.flat(tokens, word_starts, lens, sample_ids, seed, step)
        flags = self.unit_flags(fb)
        positions, unit_first, n_pred = select(fb, flags, rate, self.cfg.selector, self.token_weights)
        out, labels, is_mask = corrupt(fb, positions, unit_first, self.probs, self.tok.mask_id,
                                       self.replacement_ids, self.cfg.corrupt_per_unit)
        return MaskedBatch(out, positions, labels, is_mask, n_pred, int(fb.cum_maskable[-1]), fb.lens, fb.pos)

    def mask_batch(self, tokens: Sequence[np.ndarray], word_starts: Sequence[np.ndarray], sample_ids: np.ndarray,
                   seed: int, step: int, rate: float) -> MaskedBatch:
        """Lists of per-sample arrays (int [L_i], uint8 [L_i]) -> one MaskedBatch."""
        return self.mask_flat(np.concatenate(tokens), np.concatenate(word_starts), [len(t) for t in tokens],
                              sample_ids, seed, step, rate)

    def unit_ids(self, tokens, word_starts, lens, sample_ids, seed: int, step: int) -> np.ndarray:
        """int64 [T]: unit index of every token (-1 = not maskable), as the batch path forms units."""
        fb = self.flat(tokens, word_starts, lens, sample_ids, seed, step)
        ids = np.cumsum(self.unit_flags(fb)) - 1
        return np.where(fb.maskable, ids, -1)

    # ---- one sample (tools, benchmarks, tests) ----
    def _keys(self, rng: np.random.Generator) -> tuple[int, int]:
        k = rng.integers(0, 2**62, size=2)
        return int(k[0]), int(k[1])

    def units(self, tokens: np.ndarray, word_starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """int64 [L]: unit index per token of one sample, -1 where never masked."""
        seed, step = self._keys(rng)
        return self.unit_ids(tokens, word_starts, [len(tokens)], np.zeros(1, np.int64), seed, step)

    def mask_sample(self, tokens: np.ndarray, word_starts: np.ndarray, rng: np.random.Generator,
                    rate: float) -> MaskedSample:
        """tokens: int64 [L] with [CLS]/[SEP]; word_starts: uint8 [L] (1 at specials too). The draws
        are keyed from `rng` (e.g. sample_rng(seed, step, index)); same semantics as the batch path."""
        seed, step = self._keys(rng)
        m = self.mask_flat(tokens, word_starts, [len(tokens)], np.zeros(1, np.int64), seed, step, rate)
        return MaskedSample(m.input_ids, m.positions, m.labels, m.is_mask_token, m.num_maskable)
