"""Segmenters: a flat batch of samples -> maskable units, for the whole batch at once.

A unit is a run of maskable tokens that starts at a flagged token and ends before the next
flagged or unmaskable token, so units never cross a sequence (or document: a sample is a
chunk of one document) boundary, and special / pad tokens are never in one. A segmenter
returns the flags: bool [T], True at the first token of every unit.
- token:      every maskable token;
- whole_word: every word (word starts come from data prep: WordPiece `##`, Unigram `▁`,
              byte-BPE `Ġ` and jieba-segmented CJK alike; a chunk that starts mid-word
              starts a unit there);
- span:       SpanBERT: a sample's words cut into consecutive spans whose lengths follow
              Geometric(span_p) truncated and renormalised on [1, span_max] (span_law=truncated,
              P(k) = p(1-p)^(k-1) / (1 - (1-p)^max)), or min(Geometric, span_max) (span_law=clip);
- pmi:        n-grams of words found in the PMI table (longest first, a random one among
              overlapping matches of one length), the other words as whole-word units.
Randomness comes from the batch's counter-based `Stream`, keyed by the sample's global id
and a position inside the sample, so units do not depend on how a batch is split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from masklab.pretrain.masking import rng as R


@dataclass
class FlatBatch:
    """Samples concatenated. T tokens, B samples."""
    tokens: np.ndarray  # int64 [T] original ids, [CLS]/[SEP] included
    word_start: np.ndarray  # bool [T] word-start bits from the shards
    maskable: np.ndarray  # bool [T] not special / pad
    seq: np.ndarray  # int64 [T] row of the batch each token belongs to
    pos: np.ndarray  # int64 [T] position inside its sample
    starts: np.ndarray  # int64 [B] first token of every sample
    lens: np.ndarray  # int64 [B]
    stream: R.Stream
    _cache: dict = field(default_factory=dict)

    @property
    def cum_maskable(self) -> np.ndarray:
        """int64 [T+1]: maskable tokens before each index (exclusive prefix count)."""
        c = self._cache.get("cm")
        if c is None:
            c = self._cache["cm"] = np.concatenate([[0], np.cumsum(self.maskable)])
        return c

    def run_lengths(self, first: np.ndarray) -> np.ndarray:
        """int64 [U]: tokens in each unit given the sorted first tokens of all units [U]. A unit's
        maskable tokens are exactly those between its first token and the next unit's."""
        cm = self.cum_maskable
        return np.diff(np.append(cm[first], cm[-1]))

    def words(self):
        """-> (flags bool [T], first int64 [W], length int64 [W], sample int64 [W]) of the words."""
        w = self._cache.get("words")
        if w is None:
            prev = np.concatenate([[False], self.maskable[:-1]])
            flags = self.maskable & (self.word_start | ~prev)  # a word never continues past a special
            first = np.flatnonzero(flags)
            w = self._cache["words"] = (flags, first, self.run_lengths(first), self.seq[first])
        return w


def token_units(fb: FlatBatch, masker) -> np.ndarray:
    return fb.maskable


def whole_word_units(fb: FlatBatch, masker) -> np.ndarray:
    return fb.words()[0]


def span_lengths(u: np.ndarray, p: float, cap: int, law: str) -> np.ndarray:
    """Span lengths (words) by inverse CDF from uniforms u float64 [N] in [0, 1) -> int64 [N] in
    [1, cap]. truncated: CDF(k) = (1 - q^k) / (1 - q^cap), q = 1 - p (SpanBERT, Joshi et al. 2020:
    at p=0.2, cap=10 the mean is 3.8 words); clip: min(Geometric(p), cap) (mean 4.46, 13.4% at cap)."""
    if p >= 1.0:
        return np.ones(len(u), dtype=np.int64)
    if law == "truncated":
        u = u * -np.expm1(cap * np.log1p(-p))  # u * (1 - q^cap): the inverse CDF of the renormalised law
    lengths = 1 + np.floor(np.log1p(-u) / np.log1p(-p)).astype(np.int64)
    return np.clip(lengths, 1, cap)


def span_units(fb: FlatBatch, masker) -> np.ndarray:
    """Words grouped into consecutive spans of `span_lengths` words."""
    flags, first, _, wseq = fb.words()
    W = len(first)
    if W == 0:
        return flags
    sample_first_word = np.searchsorted(wseq, np.arange(len(fb.lens)))  # [B]
    rank = np.arange(W) - sample_first_word[wseq]  # word index inside its sample
    # span k of a sample gets length L_k (drawn for k = 0..n_words-1: enough spans to cover it)
    cfg = masker.cfg
    lengths = span_lengths(fb.stream.uniform(R.SPAN, wseq, rank), float(cfg.span_p), int(cfg.span_max),
                           cfg.span_law)
    excl = np.cumsum(lengths) - lengths
    sfw = sample_first_word[wseq]  # [W]
    start_rank = excl - excl[sfw]  # where span k of the sample starts (word rank)
    n_words = np.bincount(wseq, minlength=len(fb.lens))
    ok = start_rank < n_words[wseq]
    is_span_start = np.zeros(W, dtype=bool)
    is_span_start[(sfw + start_rank)[ok]] = True
    out = np.zeros_like(flags)
    out[first[is_span_start]] = True
    return out


def pmi_units(fb: FlatBatch, masker) -> np.ndarray:
    """PMI n-gram matches (longest first, random among overlapping same-length matches) as units."""
    flags, first, length, wseq = fb.words()
    table = masker.pmi
    W = len(first)
    if table is None or W < 2:
        return flags
    from masklab.data_prep.ngram_hash import ngram_hashes, word_hashes

    wh = word_hashes(fb.tokens, fb.maskable, first, length, table.token_hash)
    taken = np.zeros(W, dtype=bool)
    inner = np.zeros(W, dtype=bool)  # words inside (not first of) an accepted n-gram
    for n in sorted(table.hashes, reverse=True):
        if n > W:
            continue
        h = ngram_hashes(wh, n)  # [W - n + 1]
        i = np.arange(W - n + 1)
        valid = wseq[i] == wseq[i + n - 1]  # inside one sample
        cand = np.flatnonzero(valid & table.contains(n, h))
        if len(cand) == 0:
            continue
        ct = np.concatenate([[0], np.cumsum(taken)])
        cand = cand[ct[cand + n] == ct[cand]]  # no word already in a longer match
        if len(cand) == 0:
            continue
        key = fb.stream.uniform(R.PMI + 16 * n, wseq[cand], fb.pos[first[cand]])
        acc = _random_greedy(cand, key, n)
        cover = (acc[:, None] + np.arange(n)).ravel()
        taken[cover] = True
        inner[(acc[:, None] + np.arange(1, n)).ravel()] = True
    out = flags.copy()
    out[first[inner]] = False
    return out


def _random_greedy(cand: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """Accepted starts among sorted same-length candidates `cand` [C] (overlap: |i - j| < n),
    as taking them one by one in increasing `key` order and skipping overlaps would. Done in
    rounds: a live candidate whose key is the smallest among its live overlapping neighbours
    is accepted and its neighbours die (for interval overlaps this equals the sequential greedy)."""
    alive = np.ones(len(cand), dtype=bool)
    accepted = np.zeros(len(cand), dtype=bool)
    C = len(cand)
    while alive.any():
        k = np.where(alive, key, np.inf)
        local_min = alive.copy()
        for d in range(1, n):  # candidates are sorted, so overlaps are within n-1 neighbours
            if d >= C:
                break
            close = (cand[d:] - cand[:-d]) < n
            local_min[:-d] &= ~close | (k[:-d] < k[d:])
            local_min[d:] &= ~close | (k[d:] < k[:-d])
        accepted |= local_min
        dead = local_min.copy()
        for d in range(1, n):
            if d >= C:
                break
            close = (cand[d:] - cand[:-d]) < n
            dead[d:] |= close & local_min[:-d]
            dead[:-d] |= close & local_min[d:]
        alive &= ~dead
    return cand[accepted]


SEGMENTERS = {"token": token_units, "whole_word": whole_word_units, "span": span_units, "pmi": pmi_units}


def segment(unit: str, fb: FlatBatch, masker) -> np.ndarray:
    """-> bool [T]: first token of every unit."""
    return SEGMENTERS[unit](fb, masker)
