"""Masker: Segmenter -> Selector -> Corruptor for one sample; the collator is the Emitter.

Randomness is counter-based: each sample's generator is keyed by (seed, step, global sample
index), so masks do not depend on workers, ranks or resume points.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from data_prep.tokenizer import TokenizerInfo
from pretrain.masking.corrupt import corrupt
from pretrain.masking.segment import segment
from pretrain.masking.select import select

EVAL_STREAM = 2**31 - 1  # the `step` slot of evaluation batches: disjoint from training steps


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
    def __init__(self, cfg, tok: TokenizerInfo, pmi: Optional[object] = None):
        # a plain namespace: OmegaConf attribute access costs microseconds in this per-sample path
        self.cfg = SimpleNamespace(**OmegaConf.to_container(cfg)) if isinstance(cfg, DictConfig) else cfg
        self.tok = tok
        self.pmi = pmi
        self.special = np.zeros(max(tok.vocab_size, max(tok.special_ids) + 1), dtype=bool)
        self.special[list(tok.special_ids)] = True
        # random replacements come from real, non-special vocabulary only
        self.replacement_ids = np.flatnonzero(~self.special[: tok.vocab_size]).astype(np.int64)
        self.probs = np.array([cfg.mask_prob, cfg.random_prob, cfg.keep_prob], dtype=np.float64)

    def units(self, tokens: np.ndarray, word_starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        maskable = ~self.special[tokens]
        return segment(self.cfg.unit, tokens, word_starts, maskable, rng, self.cfg, self.pmi)

    def mask_sample(self, tokens: np.ndarray, word_starts: np.ndarray, rng: np.random.Generator,
                    rate: float) -> MaskedSample:
        """tokens: int64 [L] with [CLS]/[SEP]; word_starts: uint8 [L] (1 at specials too)."""
        unit_ids = self.units(tokens, word_starts, rng)
        selected = select(unit_ids, rate, rng, self.cfg.selector)
        out, positions, labels, is_mask = corrupt(tokens, selected, unit_ids, rng, self.probs, self.tok.mask_id,
                                                  self.replacement_ids, self.cfg.corrupt_per_unit)
        return MaskedSample(out, positions, labels, is_mask, int((unit_ids >= 0).sum()))
