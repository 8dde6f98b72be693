"""Varlen (unpadded) flash attention in Triton: the autograd op over the forward and backward kernels.

Same signature and semantics as `kernels.attention.varlen_attention_torch`: q [Tq, H, d],
k/v [Tk, H, d] packed per `cu_seqlens_q/k` (int32 [B+1]); non-causal; optional sliding window
(query i sees key j iff |i - j| <= window // 2, or |positions[i] - positions[j]| <= window // 2
with `positions`: the window over true positions of a stream with rows removed; the row band still
bounds the tiles visited); a query that sees no key (its sequence has no keys, or none inside its
window) outputs 0. Kernels: `triton_attention_fwd.py` (online softmax,
saves lse [H, Tq] fp32), `triton_attention_bwd.py` (deterministic dq / dk / dv), tiles and launch
checks in `triton_attention_tiles.py`. On GPU the tiles go to `tl.dot` in bf16/fp16 with fp32
accumulation; in the interpreter bf16 is upcast after loading (its bf16 arithmetic is broken).
"""
from __future__ import annotations

import math

import torch
import triton

from masklab.kernels.attention import check_varlen_args
from masklab.kernels.dispatch import triton_interpreting
from masklab.kernels.triton_attention_bwd import BWD_DKDV, BWD_DQ, attention_backward
from masklab.kernels.triton_attention_fwd import FWD, attention_forward
from masklab.kernels.triton_attention_tiles import check_launch, head_class


def _check_tiles(head_dim: int, batch_heads: int, max_len: int) -> None:
    hc = head_class(head_dim)
    for tuned in (FWD, BWD_DKDV, BWD_DQ):
        for m, n, _, _ in tuned.rows(hc):
            check_launch(head_dim, m, n, batch_heads, max_len)


class _VarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, scale, window, positions):
        D = q.shape[2]
        _check_tiles(D, (cu_q.numel() - 1) * q.shape[1], max(max_q, max_k))
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        hd = max(16, triton.next_power_of_2(D))
        w = int(window or 0)
        o, lse = attention_forward(q, k, v, cu_q, cu_k, max_q, scale, w, hd, positions)
        ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k, positions)
        ctx.args = (max_q, max_k, scale, w, hd, triton_interpreting() and q.dtype == torch.bfloat16)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_q, cu_k, positions = ctx.saved_tensors
        dq, dk, dv = attention_backward(do.contiguous(), q, k, v, o, lse, cu_q, cu_k, *ctx.args, positions)
        return dq, dk, dv, None, None, None, None, None, None, None


def varlen_attention_triton(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale=None, window=None, positions=None) -> torch.Tensor:
    """Triton flash attention over packed sequences -> [Tq, H, d] (see module docstring)."""
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window, positions)
    if q.shape[0] == 0:
        return q.clone()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    positions = None if window is None or positions is None else triton_positions(positions)
    return _VarlenAttention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                  float(scale), window, positions)


def triton_positions(positions: torch.Tensor) -> torch.Tensor:
    """The kernels read positions as contiguous int32 (positions within a sequence)."""
    return positions.to(torch.int32).contiguous()
