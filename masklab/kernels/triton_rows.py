"""Row gather / scatter and late-mask insertion in Triton (index_first_axis style).

gather_rows: out[i] = x[index[i]]          backward: scatter-add into [N, ...]
scatter_rows: out[index[i]] = x[i], 0 else  backward: gather
insert_masks: out[visible_index] = visible, out[insert_positions] = mask_rows; backward: gathers.
Rows are flattened to [N, F]; one program copies BLOCK_F columns of BLOCK_R rows. The
scatter-add of gather's backward uses fp32 atomics (indices may repeat); it accumulates in
an fp32 buffer, since bf16 atomics are not portable (and fail in the interpreter).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from masklab.kernels.insert import check_insert_args
from masklab.kernels.rows import check_index, check_scatter

BLOCK_R = 16
MAX_BLOCK_F = 1024


@triton.jit
def _copy_rows(SRC, DST, SRC_IDX, DST_IDX, n, F, HAS_SRC_IDX: tl.constexpr, HAS_DST_IDX: tl.constexpr,
               ATOMIC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    rmask = r < n
    mask = rmask[:, None] & (f[None, :] < F)
    src_row = r.to(tl.int64)
    dst_row = r.to(tl.int64)
    if HAS_SRC_IDX:
        src_row = tl.load(SRC_IDX + r, mask=rmask, other=0).to(tl.int64)
    if HAS_DST_IDX:
        dst_row = tl.load(DST_IDX + r, mask=rmask, other=0).to(tl.int64)
    vals = tl.load(SRC + src_row[:, None] * F + f[None, :], mask=mask, other=0.0)
    if ATOMIC:
        tl.atomic_add(DST + dst_row[:, None] * F + f[None, :], vals.to(tl.float32), mask=mask)
    else:
        tl.store(DST + dst_row[:, None] * F + f[None, :], vals.to(DST.dtype.element_ty), mask=mask)


def _launch(src, dst, src_idx, dst_idx, n, atomic=False):
    F = src.shape[1]
    if n == 0 or F == 0:
        return dst
    bf = min(MAX_BLOCK_F, triton.next_power_of_2(F))
    grid = (triton.cdiv(n, BLOCK_R), triton.cdiv(F, bf))
    if grid[1] > 65535:
        raise ValueError(f"row width {F} needs {grid[1]} column blocks, over the grid's axis-1 limit 65535")
    _copy_rows[grid](src, dst, src_idx if src_idx is not None else src, dst_idx if dst_idx is not None else dst,
                     n, F, HAS_SRC_IDX=src_idx is not None, HAS_DST_IDX=dst_idx is not None, ATOMIC=atomic,
                     BLOCK_R=BLOCK_R, BLOCK_F=bf)
    return dst


def _flat(x):
    """[N, ...] -> contiguous [N, F]; explicit F, since reshape(0, -1) is ambiguous for N = 0."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).contiguous()


def _gather(x, index):
    xf = _flat(x)
    out = torch.empty((index.shape[0], xf.shape[1]), device=x.device, dtype=x.dtype)
    return _launch(xf, out, index, None, index.shape[0]).view(index.shape[0], *x.shape[1:])


def _scatter(x, index, num_rows, add=False):
    xf = _flat(x)
    out = torch.zeros((num_rows, xf.shape[1]), device=x.device, dtype=torch.float32 if add else x.dtype)
    _launch(xf, out, None, index, index.shape[0], atomic=add)
    return out.to(x.dtype).view(num_rows, *x.shape[1:])


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.num_rows = x.shape[0]
        return _gather(x, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _scatter(grad, index, ctx.num_rows, add=True), None


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, num_rows):
        ctx.save_for_backward(index)
        return _scatter(x, index, num_rows)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return _gather(grad, index), None, None


class _Insert(torch.autograd.Function):
    @staticmethod
    def forward(ctx, visible, visible_index, insert_positions, mask_rows, total):
        ctx.save_for_backward(visible_index, insert_positions)
        out = torch.empty((total, visible.shape[1]), device=visible.device, dtype=visible.dtype)
        _launch(visible.contiguous(), out, None, visible_index, visible_index.shape[0])
        _launch(mask_rows.contiguous(), out, None, insert_positions, insert_positions.shape[0])
        return out

    @staticmethod
    def backward(ctx, grad):
        vis, ins = ctx.saved_tensors
        grad = grad.contiguous()
        return _gather(grad, vis), None, None, _gather(grad, ins), None


def gather_rows_triton(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [N, ...], index [K] int -> [K, ...]."""
    check_index(index, x.shape[0])
    return _Gather.apply(x, index.contiguous())


def scatter_rows_triton(x: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """x [K, ...], index [K] distinct -> [num_rows, ...], zeros elsewhere."""
    check_scatter(x, index, num_rows)
    return _Scatter.apply(x, index.contiguous(), int(num_rows))


def insert_masks_triton(visible, visible_index, insert_positions, mask_rows, total_tokens: int) -> torch.Tensor:
    """-> [total_tokens, D]: visible rows and [MASK] rows scattered into the full stream."""
    check_insert_args(visible, visible_index, insert_positions, mask_rows, total_tokens)
    return _Insert.apply(visible, visible_index.contiguous(), insert_positions.contiguous(), mask_rows, int(total_tokens))
