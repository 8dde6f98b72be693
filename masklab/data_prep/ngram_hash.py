"""64-bit hashes of words (token runs) and word n-grams, vectorised with numpy.

The PMI table is counted (data_prep.pmi_count / pmi_duckdb) and matched by the collator
(pretrain.masking.segment) with these same functions, so a table entry and a run of words in a
batch agree exactly when their token ids do (up to 64-bit collisions).
    word hash    = mix(sum_j token_hash[t_j] * Q^j + len * K)        (j = index inside the word)
    n-gram hash  = mix(sum_k word_hash_k * GAMMA^k + n * Q)
"""
from __future__ import annotations

import numpy as np

from masklab.data_prep.splitmix64 import GAMMA, mix

_Q, _K = np.uint64(0xD6E8FEB86659FD93), np.uint64(0xA0761D6478BD642F)
MAX_POWER = 256  # tokens at index >= MAX_POWER - 1 of a word share the last power (their content still counts)


def _powers(n: int) -> np.ndarray:
    """uint64 [n]: Q^0 .. Q^(n-1) modulo 2^64 (built in uint64 throughout: see splitmix64's note)."""
    p = np.full(n, _Q, dtype=np.uint64)
    p[0] = np.uint64(1)
    return np.cumprod(p, dtype=np.uint64)


_POW = _powers(MAX_POWER)


def token_hash_table(vocab_size: int) -> np.ndarray:
    """uint64 [V]: a fixed random 64-bit value per token id."""
    with np.errstate(over="ignore"):
        return mix((np.arange(vocab_size, dtype=np.uint64) + np.uint64(1)) * GAMMA ^ _K)


def word_hashes(tokens: np.ndarray, in_word: np.ndarray, first: np.ndarray, length: np.ndarray,
                token_hash: np.ndarray) -> np.ndarray:
    """Hash of each word (an ordered token run). tokens int [T]; in_word bool [T] (False at tokens
    outside every word); first int64 [W] sorted first token of each word; length int64 [W].
    -> uint64 [W]."""
    T = len(tokens)
    gaps = np.diff(np.append(first, T))
    j = np.arange(first[0], T) - np.repeat(first, gaps)  # index inside the word (or past its end)
    with np.errstate(over="ignore"):
        v = token_hash[tokens[first[0]:]] * _POW[np.minimum(j, MAX_POWER - 1)]
        v[~in_word[first[0]:]] = 0
        s = np.add.reduceat(v, first - first[0])
        return mix(s + length.astype(np.uint64) * _K)


def _combine(cols) -> np.ndarray:
    """mix(sum_k word_hash_k * GAMMA^k + n * Q) over the n columns (uint64 arrays) of an n-gram."""
    n = len(cols)
    with np.errstate(over="ignore"):
        acc = cols[0].copy()
        q = np.uint64(1)
        for k in range(1, n):
            q = q * GAMMA
            acc += cols[k] * q
        return mix(acc + np.uint64(n) * _Q)


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """uint64 [W - n + 1]: hash of the n consecutive words starting at each index of wh [W]."""
    m = len(wh) - n + 1
    return _combine([wh[k:m + k] for k in range(n)])


def ngram_hashes_rows(wh_rows: np.ndarray) -> np.ndarray:
    """uint64 [K]: the same hash for each row of word hashes [K, n] (one n-gram per row)."""
    return _combine([wh_rows[:, k] for k in range(wh_rows.shape[1])])
