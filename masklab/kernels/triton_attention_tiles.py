"""Tile configs, autotune wrapping, launch checks and the shared tile loader of the Triton attention.

Each table maps a head-dim class (<= 64, 128) to (BLOCK_M, BLOCK_N, num_warps, num_stages) rows.
The MMA "M" side of every `tl.dot` is the tile that is >= 64 rows (BLOCK_M in the forward and the
dq kernel, BLOCK_N in the dk/dv kernel, which works on transposed scores), so that sm_90 issues
wgmma; `masklab gpu-check` proves each row compiles for sm_90/sm_80 with wgmma and no spills. The
interpreter runs one config at a time (autotune needs a GPU): INTERPRET_CONFIG unless a test pins
another one (`pin_configs`). A pinned row is used on GPU too (autotune over that one row, i.e. no
tuning), so the GPU tests check every candidate of every table, not only each table's winner.

Grid: batch x heads on axis 0 (limit 2^31 - 1), the length blocks on axis 1 (limit 65,535): at 12
heads, axis 1 would have capped a call at 5,461 sequences.
"""
from __future__ import annotations

import contextlib

import triton
import triton.language as tl

from masklab.kernels.dispatch import triton_interpreting

MAX_GRID_X = 2**31 - 1
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
_pinned: dict[str, tuple] = {}  # kernel name -> one (BLOCK_M, BLOCK_N, warps, stages) row (tests, GPU or interpreter)


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
        if self.name in _pinned:
            return [_pinned[self.name]]
        if triton_interpreting():
            return [INTERPRET_CONFIG]
        return TABLES[self.name][hc]

    def __getitem__(self, hc: int):
        rows = tuple(self.rows(hc))
        if (hc, rows) not in self._tuners:
            self._tuners[hc, rows] = triton.autotune(configs=[_config(r) for r in rows],
                                                     key=["HEAD_DIM", "WINDOW", "HAS_POS", "seq_bucket"])(self.kernel)
        return self._tuners[hc, rows]


@contextlib.contextmanager
def pin_configs(**rows):
    """Tests: run e.g. fwd=(128, 64, 8, 3) instead of the autotuned table (GPU) or INTERPRET_CONFIG
    (interpreter). Keys: fwd, dkdv, dq."""
    unknown = set(rows) - set(TABLES)
    if unknown:
        raise ValueError(f"pin_configs: unknown kernel(s) {sorted(unknown)}; one of {sorted(TABLES)}")
    _pinned.update(rows)
    try:
        yield
    finally:
        for k in rows:
            _pinned.pop(k, None)


def attention_grid(batch_heads: int, max_len: int, block: int) -> tuple[int, int]:
    """The launch grid of the attention kernels: (B x H, length blocks of `block` rows)."""
    return batch_heads, triton.cdiv(max(int(max_len), 1), block)


def check_launch(head_dim: int, block_m: int, block_n: int, batch_heads: int, max_len: int = 1) -> None:
    """What the interpreter cannot catch: GPU tile rules and grid limits, checked in Python."""
    for name, blk in (("BLOCK_M", block_m), ("BLOCK_N", block_n)):
        if blk < 16 or blk & (blk - 1):
            raise ValueError(f"{name}={blk} must be a power of two >= 16 (tl.dot needs K, M, N >= 16)")
    hd = max(16, triton.next_power_of_2(head_dim))
    if hd > 256:
        raise ValueError(f"head_dim {head_dim} needs BLOCK_D={hd} > 256")
    gx, gy = attention_grid(batch_heads, max_len, min(block_m, block_n))
    if gx > MAX_GRID_X:
        raise ValueError(f"grid axis 0 = batch x heads = {gx} exceeds {MAX_GRID_X}; split the batch")
    if gy > MAX_GRID_YZ:
        raise ValueError(f"grid axis 1 = {gy} blocks of {min(block_m, block_n)} rows (max length {max_len}) "
                         f"exceeds {MAX_GRID_YZ}")


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
