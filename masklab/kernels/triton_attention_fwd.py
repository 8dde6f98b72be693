"""Forward of the Triton varlen attention: online softmax over key blocks, saves the logsumexp.

q [Tq, H, d], k/v [Tk, H, d] packed per cu_seqlens (int32 [B+1]); grid (B x H, query blocks over
max_seqlen_q). Writes o [Tq, H, d] (q's dtype) and lse [H, Tq] fp32 (natural log; -inf for a
query that sees no key, whose output is 0). No [L x L] matrix exists.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from masklab.kernels.dispatch import triton_interpreting
from masklab.kernels.triton_attention_tiles import _Tuned, attention_grid, head_class, load_tile, seq_bucket

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, cu_q, cu_k, POS, sm_scale, stride_qt, stride_qh, stride_kt, stride_kh,
                stride_vt, stride_vh, stride_ot, stride_oh, total_q, H, D, seq_bucket,
                HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, HAS_POS: tl.constexpr, UPCAST: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)  # B x H on axis 0 (limit 2^31-1); axis 1 stops at 65,535
    pid_m = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b)
    q_len = tl.load(cu_q + b + 1) - q0  # lengths and in-sequence offsets: i32; row offsets: i64
    k0 = tl.load(cu_k + b)
    k_len = tl.load(cu_k + b + 1) - k0
    q0 = q0.to(tl.int64)
    k0 = k0.to(tl.int64)
    m_start = pid_m * BLOCK_M
    if m_start >= q_len:
        return
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = load_tile(Q + q0 * stride_qt + h * stride_qh, m_start, q_len, stride_qt, D, BLOCK_M, HEAD_DIM, UPCAST)
    qk_scale = sm_scale * 1.4426950408889634  # exp2 is cheaper than exp
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = 0
    hi = k_len
    if WINDOW > 0:  # the row band; with POS a superset of the keys in the window (positions increase)
        lo = tl.maximum(m_start - WINDOW // 2, 0) // BLOCK_N * BLOCK_N
        hi = tl.minimum(m_start + BLOCK_M + WINDOW // 2, k_len)
    if HAS_POS:
        pos_m = tl.load(POS + q0 + offs_m, mask=offs_m < q_len, other=0)
    k_base = K + k0 * stride_kt + h * stride_kh
    v_base = V + k0 * stride_vt + h * stride_vh
    for n_start in range(lo, hi, BLOCK_N):
        cols = n_start + offs_n
        k = load_tile(k_base, n_start, k_len, stride_kt, D, BLOCK_N, HEAD_DIM, UPCAST)
        v = load_tile(v_base, n_start, k_len, stride_vt, D, BLOCK_N, HEAD_DIM, UPCAST)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        valid = cols[None, :] < k_len
        if WINDOW > 0:
            if HAS_POS:
                dist = pos_m[:, None] - tl.load(POS + k0 + cols, mask=cols < k_len, other=0)[None, :]
            else:
                dist = offs_m[:, None] - cols[None, :]
            valid = valid & (dist <= WINDOW // 2) & (dist >= -(WINDOW // 2))
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # fully masked rows stay at zero
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    # natural-log logsumexp; -inf for rows with no key (their gradient is zero)
    lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.log2(l_safe)) / 1.4426950408889634)
    o_ptr = O + q0 * stride_ot + h * stride_oh
    tl.store(o_ptr + offs_m[:, None].to(tl.int64) * stride_ot + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < q_len) & (offs_d[None, :] < D))
    tl.store(LSE + h.to(tl.int64) * total_q + q0 + offs_m, lse, mask=offs_m < q_len)


FWD = _Tuned("fwd", _fwd_kernel)


def attention_forward(q, k, v, cu_q, cu_k, max_q: int, scale: float, window: int, head_dim_block: int,
                      positions=None):
    """q [Tq, H, d], k/v [Tk, H, d] (unit stride in d) -> (o [Tq, H, d] contiguous, lse [H, Tq] fp32).
    positions int32 [T] (q and k the same stream): the window over these positions, not row offsets."""
    Tq, H, D = q.shape
    B = cu_q.numel() - 1
    o = torch.empty(q.shape, device=q.device, dtype=q.dtype)  # contiguous, whatever q's strides
    lse = torch.empty((H, Tq), device=q.device, dtype=torch.float32)
    upcast = triton_interpreting() and q.dtype == torch.bfloat16
    has_pos = positions is not None and window > 0
    FWD[head_class(D)][lambda m: attention_grid(B * H, max_q, m["BLOCK_M"])](
        q, k, v, o, lse, cu_q, cu_k, positions if has_pos else cu_q, scale, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1), Tq, H, D, seq_bucket(max_q),
        HEAD_DIM=head_dim_block, WINDOW=window, HAS_POS=has_pos, UPCAST=upcast)
    return o, lse
