"""splitmix64 (Steele et al. 2014): the one 64-bit mixing function of the project.

Used by the counter-based masking RNG (pretrain.masking.rng) and by the word / n-gram hashes
of the PMI table (data_prep.ngram_hash), so both share one definition. Every constant is a
numpy uint64 and every operand is cast to uint64 *before* arithmetic: a Python int or an int64
array mixed into uint64 arithmetic makes numpy promote to float64, which silently rounds the
low bits away (the PMI hash bug of issue 20).
"""
from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio increment of the splitmix64 stream
C1 = np.uint64(0xBF58476D1CE4E5B9)
C2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def u64(v: int) -> np.uint64:
    """A Python int (any sign or size) as uint64, modulo 2^64."""
    return np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrap-around arithmetic). -> x"""
    if x.dtype != np.uint64:
        raise TypeError(f"splitmix64.mix needs uint64, got {x.dtype}")
    with np.errstate(over="ignore"):
        x ^= x >> _S30
        x *= C1
        x ^= x >> _S27
        x *= C2
        x ^= x >> _S31
    return x
