"""Counter-based random numbers for masking: every draw is a hash of
(seed, step, global sample index, position in the sample, purpose).

No generator state exists, so a sample's masks do not depend on which worker, rank or
micro-batch builds it, nor on where a run resumed. Per sample a 64-bit base is mixed
from (seed, step, sample, purpose) once; per element the value is splitmix64's output
function applied to base + (pos + 1) * gamma, i.e. a splitmix64 stream per
(sample, purpose), which passes BigCrush.
"""
from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

# purposes (salts): one independent stream per random decision
ORDER, CROSS, BUDGET, CORRUPT, REPLACE, SPAN, PMI = 1, 2, 3, 4, 5, 6, 7


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrap-around arithmetic). -> x"""
    with np.errstate(over="ignore"):
        x ^= x >> _S30
        x *= _C1
        x ^= x >> _S27
        x *= _C2
        x ^= x >> _S31
    return x


def _u64(v: int) -> np.uint64:
    return np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF)


class Stream:
    """Random numbers for one batch: `sample_ids` int64 [B] are the global sample indices."""

    def __init__(self, seed: int, step: int, sample_ids: np.ndarray):
        g = np.asarray(sample_ids, dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            head = mix(np.array([_u64(seed) * GAMMA + _u64(0x5EED)], dtype=np.uint64))
            head = mix(head + _u64(step) * GAMMA)
            self._per_sample = mix(head + (g + np.uint64(1)) * GAMMA)  # [B]
        self._bases: dict[int, np.ndarray] = {}

    def base(self, salt: int) -> np.ndarray:
        """uint64 [B]: the stream key of every sample for one purpose."""
        b = self._bases.get(salt)
        if b is None:
            with np.errstate(over="ignore"):
                b = mix(self._per_sample ^ mix(np.array([_u64(salt) * _C1], dtype=np.uint64)))
            self._bases[salt] = b
        return b

    def bits(self, salt: int, seq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """uint64 [N]: hash of (sample seq[i] of this batch, position pos[i], salt)."""
        with np.errstate(over="ignore"):
            x = self.base(salt)[seq] + (pos.astype(np.uint64) + np.uint64(1)) * GAMMA
        return mix(x)

    def uniform(self, salt: int, seq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """float64 [N] in [0, 1), 53 random bits each."""
        return (self.bits(salt, seq, pos) >> _S11).astype(np.float64) * (1.0 / 2**53)
