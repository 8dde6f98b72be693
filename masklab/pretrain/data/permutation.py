"""A bijective, counter-based permutation of [0, n): a keyed Feistel network with cycle walking.

`FeistelPermutation(n, seed, epoch)(k)` maps positions k int64 [m] to distinct rows in [0, n),
computed from the key alone: O(1) memory (nothing materialised, unlike np.random.permutation's
8 bytes per element), the same in every process, random access for exact resume.
The network permutes [0, 2^bits) with bits the even number >= log2(n) (so 2^bits < 4n); values
that land outside [0, n) are encrypted again (cycle walking), which keeps the map a bijection of
[0, n). Expected walks per element < 4; the round function is the splitmix64 finaliser.
"""
from __future__ import annotations

import numpy as np

_M64 = (1 << 64) - 1
ROUNDS = 4  # Luby-Rackoff: 4 rounds give a strong pseudo-random permutation


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, uint64 [m] -> uint64 [m] (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = int(_mix(np.array([(h ^ (int(p) & _M64)) & _M64], dtype=np.uint64))[0])
    return np.uint64(h)


class FeistelPermutation:
    def __init__(self, n: int, seed: int, epoch: int):
        if n < 1:
            raise ValueError(f"cannot permute an empty range (n={n})")
        self.n = int(n)
        bits = max(2, (self.n - 1).bit_length())
        bits += bits & 1
        self.half = np.uint64(bits // 2)
        self.mask = np.uint64((1 << (bits // 2)) - 1)
        self.keys = [_key(seed, epoch, r) for r in range(ROUNDS)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << self.half) | right

    def __call__(self, k: np.ndarray) -> np.ndarray:
        """positions int [m] in [0, n) -> rows int64 [m] in [0, n), distinct for distinct positions."""
        with np.errstate(over="ignore"):
            y = self._encrypt(np.asarray(k, dtype=np.int64).astype(np.uint64))
            out = y >= np.uint64(self.n)
            while out.any():
                idx = np.flatnonzero(out)
                y[idx] = self._encrypt(y[idx])
                out[idx] = y[idx] >= np.uint64(self.n)
        return y.astype(np.int64)
