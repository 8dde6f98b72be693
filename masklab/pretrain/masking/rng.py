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

from masklab.data_prep.splitmix64 import C1 as _C1
from masklab.data_prep.splitmix64 import GAMMA, mix
from masklab.data_prep.splitmix64 import u64 as _u64

_S11 = np.uint64(11)

# purposes (salts): one independent stream per random decision
ORDER, CROSS, BUDGET, CORRUPT, REPLACE, SPAN, PMI = 1, 2, 3, 4, 5, 6, 7


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
