"""Varlen (unpadded) attention: argument checks, the PyTorch reference, the flash_attn wrapper.

Sequences are packed: q [Tq, H, d], k/v [Tk, H, d]; sequence b owns rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] of q and cu_seqlens_k[b]:cu_seqlens_k[b+1] of k/v.
Non-causal. `window` (optional int) is a sliding window: query i (its index within its
sequence) sees key j iff |i - j| <= window // 2 (ModernBERT's local attention).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


def check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be [total_tokens, heads, head_dim], got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device == cu_seqlens_q.device == cu_seqlens_k.device):
        raise ValueError("q, k, v and cu_seqlens must be on the same device")
    if k.shape != v.shape or q.shape[1:] != k.shape[1:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[2] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[2]} unsupported; supported: {SUPPORTED_HEAD_DIMS}")
    for name, cu, total in (("cu_seqlens_q", cu_seqlens_q, q.shape[0]), ("cu_seqlens_k", cu_seqlens_k, k.shape[0])):
        if cu.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {cu.dtype}")
        if cu.dim() != 1 or cu.numel() < 2:
            raise ValueError(f"{name} must be 1-D with B+1 >= 2 entries")
        if cu.device.type == "cpu":  # avoid a device sync on GPU
            if int(cu[0]) != 0 or bool((cu[1:] < cu[:-1]).any()):
                raise ValueError(f"{name} must start at 0 and be non-decreasing")
            if int(cu[-1]) != total:
                raise ValueError(f"{name}[-1]={int(cu[-1])} does not equal total tokens {total}")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError("cu_seqlens_q and cu_seqlens_k must have the same batch size")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")


def _pad(x: torch.Tensor, cu: torch.Tensor, max_len: int):
    """[T, H, d] -> [B, H, max_len, d] plus the flat index of each real row."""
    B = cu.numel() - 1
    lens = (cu[1:] - cu[:-1]).long()
    pos = torch.arange(max_len, device=x.device)
    valid = pos[None, :] < lens[:, None]  # [B, L]
    flat = (torch.arange(B, device=x.device)[:, None] * max_len + pos[None, :])[valid]
    out = x.new_zeros(B * max_len, x.shape[1], x.shape[2])
    out = out.index_copy(0, flat, x)
    return out.view(B, max_len, x.shape[1], x.shape[2]).transpose(1, 2), valid, flat


def varlen_attention_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale: Optional[float] = None, window: Optional[int] = None) -> torch.Tensor:
    """Reference: pad per sequence, SDPA with a key-padding (and band) mask, unpad. -> [Tq, H, d]"""
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window)
    if q.shape[0] == 0:
        return q.clone()
    max_seqlen_q, max_seqlen_k = max(int(max_seqlen_q), 1), max(int(max_seqlen_k), 1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    qp, _, flat_q = _pad(q, cu_seqlens_q, max_seqlen_q)
    kp, kvalid, _ = _pad(k, cu_seqlens_k, max_seqlen_k)
    vp, _, _ = _pad(v, cu_seqlens_k, max_seqlen_k)
    mask = kvalid[:, None, None, :]  # [B, 1, 1, Lk]
    if window is not None:
        i = torch.arange(max_seqlen_q, device=q.device)[:, None]
        j = torch.arange(max_seqlen_k, device=q.device)[None, :]
        mask = mask & ((i - j).abs() <= window // 2)[None, None]
    # a query that sees no key (empty sequence, or outside every window) gets zeros, as the kernels do
    visible = mask.any(-1, keepdim=True)
    mask = mask | ~visible
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, scale=scale)
    out = out * visible
    out = out.transpose(1, 2).reshape(-1, q.shape[1], q.shape[2])
    return out.index_select(0, flat_q)


def varlen_attention_flash(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale: Optional[float] = None, window: Optional[int] = None) -> torch.Tensor:
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window)
    from flash_attn import flash_attn_varlen_func

    w = (-1, -1) if window is None else (window // 2, window // 2)
    return flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                  softmax_scale=softmax_scale, causal=False, window_size=w)
