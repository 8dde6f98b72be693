"""Varlen (unpadded) attention: argument checks, the PyTorch reference, the flash_attn wrapper.

Sequences are packed: q [Tq, H, d], k/v [Tk, H, d]; sequence b owns rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] of q and cu_seqlens_k[b]:cu_seqlens_k[b+1] of k/v.
Non-causal. `window` (optional int) is a sliding window: query i (its index within its
sequence) sees key j iff |i - j| <= window // 2 (ModernBERT's local attention). With `positions`
(int [T], q and k the same stream: cu_seqlens_q == cu_seqlens_k) the window is over those
positions instead of row offsets: row i sees row j iff |positions[i] - positions[j]| <= window // 2.
This is the window in true positions of a stream with rows removed (late-mask insertion's visible
stream, Token Dropping's kept rows); the positions must increase strictly within each sequence, so
the true distance is never below the row distance and the row-offset band stays a valid bound.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


def check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window,
                      positions=None) -> None:
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
    if positions is not None:
        _check_positions(positions, q, k, cu_seqlens_q, cu_seqlens_k)


def _check_positions(positions, q, k, cu_q, cu_k) -> None:
    if positions.dim() != 1 or positions.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"positions must be int32/int64 [T], got {positions.dtype} {tuple(positions.shape)}")
    if positions.device != q.device:
        raise ValueError("positions must be on q's device")
    if not (positions.shape[0] == q.shape[0] == k.shape[0]):
        raise ValueError(f"positions ({positions.shape[0]} rows) need q and k of the same stream: "
                         f"q {q.shape[0]}, k {k.shape[0]} rows")
    if positions.device.type == "cpu":  # avoid a device sync on GPU
        if not torch.equal(cu_q, cu_k):
            raise ValueError("positions need cu_seqlens_q == cu_seqlens_k (q and k the same stream)")
        T = positions.shape[0]
        starts = torch.zeros(T + 1, dtype=torch.bool)
        starts[cu_q[:-1].long()] = True
        if bool(((positions[1:] - positions[:-1] <= 0) & ~starts[1:T]).any()):
            raise ValueError("positions must increase strictly within each sequence")


LENGTH_BUCKETS = 4  # `buckets` given: sequences grouped by length, each group padded to its own max


def _pad_group(x: torch.Tensor, start: torch.Tensor, lens: torch.Tensor, max_len: int):
    """Rows of the group's sequences (start/lens int64 [n]) of x [T, H, d] ->
    (padded [n, H, max_len, d], valid bool [n, max_len], their rows in x [R], their rows in padded [R])."""
    n = start.numel()
    pos = torch.arange(max_len, device=x.device)
    valid = pos[None, :] < lens[:, None]
    src = (start[:, None] + pos[None, :])[valid]
    dst = (torch.arange(n, device=x.device)[:, None] * max_len + pos[None, :])[valid]
    out = x.new_zeros(n * max_len, x.shape[1], x.shape[2]).index_copy(0, dst, x.index_select(0, src))
    return out.view(n, max_len, x.shape[1], x.shape[2]).transpose(1, 2), valid, src, dst


def _pad_positions(positions: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n: int, max_len: int):
    """positions [T] -> [n, max_len] at the padded rows (_pad_group's src / dst), 0 at padding."""
    flat = positions.new_zeros(n * max_len).index_copy(0, dst, positions.index_select(0, src))
    return flat.view(n, max_len)


def _group_attention(q, k, v, seqs, cu_q, cu_k, lens_q, lens_k, scale, window, positions=None):
    """SDPA over the sequences `seqs` (int64 [n]) padded to the group's own max lengths, with a
    key-padding (and band) mask. -> (output rows [R, H, d], their row indices in q [R])."""
    lq, lk = lens_q[seqs], lens_k[seqs]
    mq, mk = max(int(lq.max()), 1), max(int(lk.max()), 1)
    dev = q.device
    qp, _, src_q, dst_q = _pad_group(q, cu_q[seqs].to(dev), lq.to(dev), mq)
    start_k, lk = cu_k[seqs].to(dev), lk.to(dev)
    kp, kvalid, src_k, dst_k = _pad_group(k, start_k, lk, mk)
    vp, _, _, _ = _pad_group(v, start_k, lk, mk)
    mask = kvalid[:, None, None, :]  # [n, 1, 1, Lk]
    if window is not None and positions is not None:  # the window over true positions
        i = _pad_positions(positions, src_q, dst_q, seqs.numel(), mq)[:, :, None]
        j = _pad_positions(positions, src_k, dst_k, seqs.numel(), mk)[:, None, :]
        mask = mask & ((i - j).abs() <= window // 2)[:, None]
    elif window is not None:
        i = torch.arange(mq, device=dev)[:, None]
        j = torch.arange(mk, device=dev)[None, :]
        mask = mask & ((i - j).abs() <= window // 2)[None, None]
    # a query that sees no key (empty sequence, or outside every window) gets zeros, as the kernels do
    visible = mask.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask | ~visible, scale=scale) * visible
    return out.transpose(1, 2).reshape(-1, q.shape[1], q.shape[2]).index_select(0, dst_q), src_q


def padded_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, max_q: int, max_k: int, scale: float, window,
                     positions=None):
    """One padded SDPA batch built with device ops only: no `.cpu()`, `.item()` or boolean
    compaction (each would wait for the device). q [Tq, H, d], k/v [Tk, H, d], cu_seqlens int32
    [B+1] on the device, max_q/max_k host ints (the batch knows them) -> [Tq, H, d].
    positions [T] (q and k the same rows): the window over these true positions."""
    B, H, d = cu_seqlens_q.numel() - 1, q.shape[1], q.shape[2]
    if k.shape[0] == 0:
        return q.new_zeros(q.shape)
    cu_q, cu_k = cu_seqlens_q.long(), cu_seqlens_k.long()

    def rows_of(cu, L, T):  # -> packed row of each padded slot [B, L] (clamped past the end), valid [B, L]
        pos = torch.arange(L, device=cu.device)
        return (cu[:-1, None] + pos[None, :]).clamp(max=T - 1), pos[None, :] < (cu[1:] - cu[:-1])[:, None]

    def pad(x, cu, L):  # [T, H, d] -> [B, H, L, d] (rows past a sequence's end are don't-care), valid [B, L]
        rows, valid = rows_of(cu, L, x.shape[0])
        return x.index_select(0, rows.reshape(-1)).view(B, L, H, d).transpose(1, 2), valid

    mq, mk = max(max_q, 1), max(max_k, 1)
    qp, _ = pad(q, cu_q, mq)
    kp, kvalid = pad(k, cu_k, mk)
    vp, _ = pad(v, cu_k, mk)
    mask = kvalid[:, None, None, :]  # [B, 1, 1, Lk]
    if window is not None and positions is not None:  # the window over true positions
        pi = positions.index_select(0, rows_of(cu_q, mq, q.shape[0])[0].reshape(-1)).view(B, mq)
        pj = positions.index_select(0, rows_of(cu_k, mk, k.shape[0])[0].reshape(-1)).view(B, mk)
        mask = mask & ((pi[:, :, None] - pj[:, None, :]).abs() <= window // 2)[:, None]
    elif window is not None:
        i = torch.arange(mq, device=q.device)[:, None]
        j = torch.arange(mk, device=q.device)[None, :]
        mask = mask & ((i - j).abs() <= window // 2)[None, None]
    visible = mask.any(-1, keepdim=True)  # a query that sees no key gets zeros, as the kernels do
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask | ~visible, scale=scale) * visible
    t = torch.arange(q.shape[0], device=q.device)
    seq = torch.searchsorted(cu_q[1:], t, right=True)  # the sequence of each packed query row
    return out.transpose(1, 2)[seq, t - cu_q[seq]]


def _sequence_attention(qs, ks, vs, scale, window, pos=None):
    """One sequence, no padding: qs [Lq, H, d], ks/vs [Lk, H, d] (row views of the packed
    tensors) -> [Lq, H, d]. SDPA reads the views as [1, H, L, d] through their strides, so
    nothing is copied in. A window is computed in query blocks of window // 2 rows, each against
    only the keys it can see (with a band mask): ~3 * window // 2 keys per query instead of Lk.
    pos [L] (q and k the same rows): the band is over these positions (a subset of the row band)."""
    Lq, Lk, H, d = qs.shape[0], ks.shape[0], qs.shape[1], qs.shape[2]
    heads = lambda x: x.transpose(0, 1).unsqueeze(0)  # [L, H, d] -> [1, H, L, d], a view
    if Lq == 0 or Lk == 0:  # a query that sees no key gets zeros, as the kernels do
        return qs.new_zeros(Lq, H, d)
    if window is None:
        return F.scaled_dot_product_attention(heads(qs), heads(ks), heads(vs), scale=scale)[0].transpose(0, 1)
    hw = window // 2
    n_vis = min(Lq, Lk + hw)  # query rows i >= Lk + hw see no key: zeros
    block = max(hw, 16)
    parts = []
    for a in range(0, n_vis, block):
        b = min(a + block, n_vis)
        ka, kb = max(0, a - hw), min(Lk, b + hw)  # every key some row of [a, b) can see
        if pos is None:
            rows = torch.arange(a, b, device=qs.device)
            mask = (rows[:, None] - torch.arange(ka, kb, device=qs.device)[None, :]).abs() <= hw
        else:  # each query sees itself: no row is fully masked
            mask = (pos[a:b, None] - pos[None, ka:kb]).abs() <= hw
        parts.append(F.scaled_dot_product_attention(heads(qs[a:b]), heads(ks[ka:kb]), heads(vs[ka:kb]),
                                                    attn_mask=None if bool(mask.all()) else mask, scale=scale))
    out = torch.cat(parts, 2)[0].transpose(0, 1)
    return out if n_vis == Lq else torch.cat([out, qs.new_zeros(Lq - n_vis, H, d)])


def varlen_attention_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale: Optional[float] = None, window: Optional[int] = None,
                           buckets: Optional[int] = None, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference: SDPA per sequence (CPU) or one padded batch (elsewhere). -> [Tq, H, d]

    CPU (buckets=None): each sequence runs on row views of q/k/v: no padding, no gather or scatter
    copies, one concatenation of the outputs (on CPU a kernel call costs microseconds, copies
    and padded FLOPs cost more). Elsewhere (buckets=None): one batch padded to max_seqlen, built
    on the device with no host read (`padded_on_device`; a GPU step stays sync-free). With
    `buckets` given (tests, benchmarks): sequences sorted by key length and split into up to
    `buckets` equal-count groups, each padded to its own longest sequence (host bookkeeping).
    positions: the window over true positions (module docstring); ignored without a window."""
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window, positions)
    if window is None:
        positions = None
    if q.shape[0] == 0:
        return q.clone()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if buckets is None and q.device.type != "cpu":  # the training default off CPU: no host read
        return padded_on_device(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                scale, window, positions)
    cu_q, cu_k = cu_seqlens_q.cpu().long(), cu_seqlens_k.cpu().long()  # group bookkeeping on the host
    lens_q, lens_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    if buckets is None:
        # split (not slicing): its backward is one concatenation, not a zero-filled [T, H, d] per piece
        pos = [None] * lens_q.numel() if positions is None else positions.split(lens_q.tolist())
        parts = zip(q.split(lens_q.tolist()), k.split(lens_k.tolist()), v.split(lens_k.tolist()), pos)
        return torch.cat([_sequence_attention(a, b, c, scale, window, p) for a, b, c, p in parts])
    B = lens_k.numel()
    order = torch.argsort(lens_k, stable=True)
    groups = torch.tensor_split(order, max(1, min(int(buckets or LENGTH_BUCKETS), B)))
    if len(groups) == 1:
        out, _ = _group_attention(q, k, v, torch.arange(B), cu_q, cu_k, lens_q, lens_k, scale, window, positions)
        return out  # one group in batch order: rows already in q's order
    parts = [_group_attention(q, k, v, g, cu_q, cu_k, lens_q, lens_k, scale, window, positions)
             for g in groups if g.numel()]
    out = torch.cat([o for o, _ in parts])
    rows = torch.cat([r for _, r in parts])
    return out.index_select(0, torch.argsort(rows))


def varlen_attention_flash(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale: Optional[float] = None, window: Optional[int] = None,
                           positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window, positions)
    if window is not None and positions is not None:  # dispatch never sends these here
        raise RuntimeError("flash_attn's window is over row offsets; a window over positions needs triton or torch")
    from flash_attn import flash_attn_varlen_func

    w = (-1, -1) if window is None else (window // 2, window // 2)
    return flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                  softmax_scale=softmax_scale, causal=False, window_size=w)
