"""Pooling token states into one vector per sequence: `cls` (first token), `mean` or `max` over
all tokens of a sequence, special tokens included (what sentence-transformers does); on padded
batches (HF encoders) and on the unpadded, cu_seqlens-delimited path (our model)."""
from __future__ import annotations

import torch

POOLINGS = ("cls", "mean", "max")


def pool_padded(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """h [B, L, D], mask [B, L] (1 = real token) -> [B, D]."""
    if pooling == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    if pooling == "mean":
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    return h.masked_fill(m == 0, float("-inf")).amax(1)


def pool_unpadded(h: torch.Tensor, cu_seqlens: torch.Tensor, pooling: str) -> torch.Tensor:
    """h [T, D] (sequences concatenated), cu_seqlens int32 [B+1] -> [B, D]."""
    cu = cu_seqlens.long()
    if pooling == "cls":
        return h.index_select(0, cu[:-1])
    lens = cu[1:] - cu[:-1]
    seg = torch.repeat_interleave(torch.arange(len(lens), device=h.device), lens)  # [T] -> sequence index
    out = torch.zeros(len(lens), h.shape[1], dtype=h.dtype, device=h.device)
    if pooling == "mean":
        return out.index_add_(0, seg, h) / lens.unsqueeze(1).to(h.dtype)
    return out.scatter_reduce_(0, seg.unsqueeze(1).expand_as(h), h, reduce="amax", include_self=False)
