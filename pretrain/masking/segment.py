"""Segmenters: token ids + word-start bits -> maskable units (unit id per token, -1 = never masked).

Units are contiguous runs of tokens inside one sample (so never across a sequence or
document boundary). Special and pad tokens are never maskable.
- token:      every maskable token is a unit;
- whole_word: a unit per word (word starts are stored per token by data prep: WordPiece `##`,
              Unigram `▁`, byte-BPE `Ġ` and jieba-segmented CJK alike);
- pmi:        n-grams of words found in a PMI table (longest first, random among overlaps),
              the remaining words as whole-word units;
- span:       SpanBERT-style: words grouped into spans of geometric length (p, capped).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def word_ids(word_starts: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """int64 [L]: word index per maskable token (a word never spans an unmaskable token), -1 else."""
    prev_maskable = np.concatenate([[False], maskable[:-1]])
    starts = maskable & ((word_starts != 0) | ~prev_maskable)
    ids = np.cumsum(starts) - 1
    return np.where(maskable, ids, -1)


def token_units(tokens, word_starts, maskable, rng, cfg, pmi=None) -> np.ndarray:
    ids = np.cumsum(maskable) - 1
    return np.where(maskable, ids, -1)


def whole_word_units(tokens, word_starts, maskable, rng, cfg, pmi=None) -> np.ndarray:
    return word_ids(word_starts, maskable)


def span_units(tokens, word_starts, maskable, rng, cfg, pmi=None) -> np.ndarray:
    """Group consecutive words into spans whose lengths ~ Geometric(p) clipped at span_max."""
    w = word_ids(word_starts, maskable)
    n_words = int(w.max()) + 1 if maskable.any() else 0
    if n_words == 0:
        return w
    lengths = np.minimum(rng.geometric(cfg.span_p, size=n_words), cfg.span_max)
    span_of_word = np.repeat(np.arange(n_words), lengths)[:n_words]
    return np.where(w >= 0, span_of_word[np.maximum(w, 0)], -1)


def pmi_units(tokens, word_starts, maskable, rng, cfg, pmi=None) -> np.ndarray:
    """PMI n-gram matches become units (longest first, random order among equal lengths, no
    overlaps); other words stay whole-word units."""
    w = word_ids(word_starts, maskable)
    n_words = int(w.max()) + 1 if maskable.any() else 0
    if n_words < 2 or pmi is None:
        return w
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], w])) != 0)  # first token of each run
    word_start_tok = bounds[w[bounds] >= 0]
    word_end_tok = np.append(word_start_tok[1:], len(tokens))
    # a word ends where the next word starts or at the first unmaskable token
    unmaskable = np.flatnonzero(~maskable)
    if len(unmaskable):
        nxt = np.searchsorted(unmaskable, word_start_tok, side="right")
        cap = np.where(nxt < len(unmaskable), unmaskable[np.minimum(nxt, len(unmaskable) - 1)], len(tokens))
        word_end_tok = np.minimum(word_end_tok, cap)
    words = [tuple(tokens[a:b].tolist()) for a, b in zip(word_start_tok, word_end_tok)]
    cands = []
    for n in range(pmi.max_n, 1, -1):
        table = pmi.ngrams.get(n)
        if not table:
            continue
        for i in range(n_words - n + 1):
            if tuple(words[i:i + n]) in table:
                cands.append((n, i))
    if not cands:
        return w
    order = rng.permutation(len(cands))
    cands = sorted((cands[j] for j in order), key=lambda c: -c[0])  # stable: random among equal lengths
    taken = np.zeros(n_words, dtype=bool)
    unit_of_word = np.arange(n_words)
    for n, i in cands:
        if not taken[i:i + n].any():
            taken[i:i + n] = True
            unit_of_word[i:i + n] = i
    _, dense = np.unique(unit_of_word, return_inverse=True)
    return np.where(w >= 0, dense[np.maximum(w, 0)], -1)


SEGMENTERS = {"token": token_units, "whole_word": whole_word_units, "span": span_units, "pmi": pmi_units}


def segment(unit: str, tokens, word_starts, maskable, rng, cfg, pmi: Optional[object] = None) -> np.ndarray:
    return SEGMENTERS[unit](tokens, word_starts, maskable, rng, cfg, pmi)
