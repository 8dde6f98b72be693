"""The public ops: each resolves its implementation in `dispatch` and calls it.

Each op takes `backend=` to override the configured backend for one call
(`auto|triton|flash_attn|torch`).
"""
from __future__ import annotations

from typing import Optional

import torch

from masklab.kernels.dispatch import get_backend, implementation, load, resolve, set_backend


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     softmax_scale=None, window=None, *, positions: Optional[torch.Tensor] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """q [Tq, H, d], k/v [Tk, H, d], cu_seqlens_* int32 [B+1] -> [Tq, H, d]. Non-causal.

    window: query row i sees key row j iff |i - j| <= window // 2. positions (int [T], q and k the
    same stream, strictly increasing within each sequence): the window is over these positions
    instead, |positions[i] - positions[j]| <= window // 2 (ignored without a window)."""
    if window is None:
        positions = None
    name = resolve("varlen_attention", q.device, backend, dtype=q.dtype, head_dim=q.shape[-1], window=window,
                   positions=positions is not None)
    if torch.compiler.is_compiling() and name in ("torch", "triton"):  # one opaque op in the graph
        from masklab.kernels.custom_ops import varlen_attention_compiled

        return varlen_attention_compiled(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                         softmax_scale, window, name, positions)
    fn = load("varlen_attention", name)
    if positions is None:  # the implementations' common positional signature
        return fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, window)
    return fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, window,
              positions=positions)


def masked_token_loss(hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
                      decoder_weight, decoder_bias, ln_eps: float = 1e-12, *, backend: Optional[str] = None):
    """Summed MLM cross-entropy over `positions` and the count of correct argmax predictions."""
    fn = implementation("masked_token_loss", hidden.device, backend, dtype=hidden.dtype)
    return fn(hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
              decoder_weight, decoder_bias, ln_eps)


def insert_masks(visible, visible_index, insert_positions, mask_rows, total_tokens: int, *,
                 backend: Optional[str] = None) -> torch.Tensor:
    fn = implementation("insert_masks", visible.device, backend, dtype=visible.dtype)
    return fn(visible, visible_index, insert_positions, mask_rows, total_tokens)


def gather_rows(x, index, *, backend: Optional[str] = None) -> torch.Tensor:
    return implementation("gather_rows", x.device, backend, dtype=x.dtype)(x, index)


def scatter_rows(x, index, num_rows: int, *, backend: Optional[str] = None) -> torch.Tensor:
    return implementation("scatter_rows", x.device, backend, dtype=x.dtype)(x, index, num_rows)


def unpad_input(padded: torch.Tensor, attention_mask: torch.Tensor, *, backend: Optional[str] = None):
    """padded [B, L, ...], attention_mask [B, L] (1 = real) ->
    (rows [T, ...], indices [T] int64, cu_seqlens [B+1] int32, max_seqlen int)."""
    lens = attention_mask.sum(-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu = torch.nn.functional.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))
    flat = padded.reshape(-1, *padded.shape[2:])
    return gather_rows(flat, indices, backend=backend), indices, cu, int(lens.max()) if lens.numel() else 0


def pad_input(rows: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int, *,
              backend: Optional[str] = None) -> torch.Tensor:
    """rows [T, ...] -> [batch, seqlen, ...] with zeros at padding."""
    out = scatter_rows(rows, indices, batch * seqlen, backend=backend)
    return out.view(batch, seqlen, *rows.shape[1:])


__all__ = ["varlen_attention", "masked_token_loss", "insert_masks", "gather_rows", "scatter_rows",
           "unpad_input", "pad_input", "set_backend", "get_backend", "resolve"]
