"""Row gather/scatter (index_first_axis style) and the pad/unpad helpers built on them.

Our own, so we never depend on flash_attn.bert_padding (its return values changed between
versions). `gather_rows` backward is `scatter_rows` and vice versa.
"""
from __future__ import annotations

import torch


def check_index(index: torch.Tensor, num_rows: int, name: str = "index") -> None:
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be int64 or int32, got {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(index.shape)}")
    if index.numel() and index.device.type == "cpu":  # a device sync on GPU: checked on CPU only
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= num_rows:
            raise IndexError(f"{name} out of range: values in [{lo}, {hi}] for {num_rows} rows")


def check_scatter(x: torch.Tensor, index: torch.Tensor, num_rows: int) -> None:
    """scatter_rows' arguments: one index per row of x, each in [0, num_rows)."""
    check_index(index, num_rows)
    if index.shape[0] != x.shape[0]:
        raise ValueError(f"index has {index.shape[0]} rows but x has {x.shape[0]}")


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.num_rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.num_rows,) + grad.shape[1:])
        out.index_add_(0, index, grad)
        return out, None


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, num_rows):
        ctx.save_for_backward(index)
        out = x.new_zeros((num_rows,) + x.shape[1:])
        out.index_copy_(0, index, x)
        return out

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def gather_rows_torch(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: [N, ...]; index: [K] int64 -> [K, ...]. Backward scatters (adds) into [N, ...]."""
    check_index(index, x.shape[0])
    return _Gather.apply(x, index.long())


def scatter_rows_torch(x: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """x: [K, ...]; index: [K] distinct int64 -> [num_rows, ...], zeros elsewhere."""
    check_scatter(x, index, num_rows)
    return _Scatter.apply(x, index.long(), int(num_rows))
