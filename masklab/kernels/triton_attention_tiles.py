"""Tile configs, autotune wrapping, launch checks and the shared tile loader of the Triton attention.

Each table maps a head-dim class (<= 64, 128) to (BLOCK_M, BLOCK_N, num_warps, num_stages) rows.
The MMA "M" side of every `tl.dot` is the tile that is >= 64 rows (BLOCK_M in the forward and the
dq kernel, BLOCK_N in the dk/dv kernel, which works on transposed scores), so that sm_90 issues
wgmma; `masklab gpu-check` proves each row compiles for sm_90/sm_80 with wgmma and no spills. The
interpreter runs one config at a time (autotune needs a GPU): INTERPRET_CONFIG unless a test pins
another one (`pin_configs`).
"""
from __future__ import annotations

import contextlib

import triton
import triton.language as tl

from masklab.kernels.dispatch import triton_interpreting

MAX_GRID_YZ = 65535
FWD_CONFIGS = {64: [(128, 64, 8, 3), (64, 64, 4, 3)],
               128: [(64, 32, 8, 2), (64, 32, 4, 2)]}
BWD_DKDV_CONFIGS = {64: [(32, 128, 8, 2), (32, 64, 4, 2)],
                    128: [(32, 64, 8, 2), (16, 64, 4, 2)]}
BWD_DQ_CONFIGS = {64: [(128, 32, 8, 2), (64, 32, 4, 2)],
                  128: [(64, 32, 8, 2), (64, 32, 4, 2)]}
TABLES = {"fwd": FWD_CONFIGS, "dkdv": BWD_DKDV_CONFIGS, "dq": BWD_DQ_CONFIGS}
INTERPRET_CONFIG = (32, 32, 4, 1)
PRE_BLOCK_T = 64  # rows per program of the delta preprocess
PRE_NUM_WARPS = 8  # 4 warps spill at d128 on sm_90 (gpu-check): 64 x 128 x 2 fp32 values + int64 pointers
_pinned: dict[str, tuple] = {}  # kernel name -> one (BLOCK_M, BLOCK_N, warps, stages) row, interpreter tests only


def head_class(head_dim: int) -> int:
    return 64 if head_dim <= 64 else 128


def seq_bucket(max_seqlen: int) -> int:
    """Autotune key for the length: powers of two from 64 to 8192 (few re-tunes, lengths differ per batch)."""
    return min(max(64, triton.next_power_of_2(max(int(max_seqlen), 1))), 8192)


def _config(row) -> triton.Config:
    m, n, w, s = row
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)


class _Tuned:
    """The kernel autotuned per head class over its table (keyed on head dim, window, positions, length bucket:
    the best tile differs between L=128 and L=512); in the interpreter, one config."""

    def __init__(self, name: str, kernel):
        self.name, self.kernel = name, kernel
        self._tuners: dict = {}

    def rows(self, hc: int) -> list[tuple]:
        if triton_interpreting():
            return [_pinned.get(self.name, INTERPRET_CONFIG)]
        return TABLES[self.name][hc]

    def __getitem__(self, hc: int):
        rows = tuple(self.rows(hc))
        if (hc, rows) not in self._tuners:
            self._tuners[hc, rows] = triton.autotune(configs=[_config(r) for r in rows],
                                                     key=["HEAD_DIM", "WINDOW", "HAS_POS", "seq_bucket"])(self.kernel)
        return self._tuners[hc, rows]


@contextlib.contextmanager
def pin_configs(**rows):
    """Interpreter tests: run e.g. fwd=(128, 64, 8, 3) instead of INTERPRET_CONFIG (a production row)."""
    _pinned.update(rows)
    try:
        yield
    finally:
        for k in rows:
            _pinned.pop(k, None)


def check_launch(head_dim: int, block_m: int, block_n: int, grid_y: int) -> None:
    """What the interpreter cannot catch: GPU tile rules and grid limits, checked in Python."""
    for name, blk in (("BLOCK_M", block_m), ("BLOCK_N", block_n)):
        if blk < 16 or blk & (blk - 1):
            raise ValueError(f"{name}={blk} must be a power of two >= 16 (tl.dot needs K, M, N >= 16)")
    hd = max(16, triton.next_power_of_2(head_dim))
    if hd > 256:
        raise ValueError(f"head_dim {head_dim} needs BLOCK_D={hd} > 256")
    if grid_y > MAX_GRID_YZ:
        raise ValueError(f"grid axis 1 = batch x heads = {grid_y} exceeds {MAX_GRID_YZ}; split the batch")


@triton.jit
def load_tile(base, row0, n_rows, stride_t, D, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
              UPCAST: tl.constexpr):
    """Rows [row0, row0 + BLOCK) x [0, HEAD_DIM) of a [n_rows, D] slab at `base` (row stride stride_t,
    unit column stride); rows past n_rows read as 0. The row index is i32 (in-sequence), widened to i64
    only for the offset (Triton 3.9 has no block pointers; tensor descriptors cannot bound a sequence)."""
    rows = row0 + tl.arange(0, BLOCK)
    cols = tl.arange(0, HEAD_DIM)
    x = tl.load(base + rows[:, None].to(tl.int64) * stride_t + cols[None, :],
                mask=(rows[:, None] < n_rows) & (cols[None, :] < D), other=0.0)
    if UPCAST:  # the interpreter's bf16 arithmetic is broken: compute in fp32 there
        x = x.to(tl.float32)
    return x
