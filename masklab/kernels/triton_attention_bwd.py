"""Backward of the Triton varlen attention: dq, dk, dv, deterministic (no atomics).

A preprocess kernel writes delta = rowsum(dO * O) [H, Tq] fp32; one program per key block writes
dk/dv, one per query block writes dq. Both recompute P from q, k and the forward's lse [H, Tq].
The dk/dv kernel works on transposed scores (S^T = K Q^T, [BLOCK_N, BLOCK_M]) so the key block is the
MMA M side of all three of its dots, as the query block is in the dq kernel: with that side >= 64
rows sm_90 issues wgmma.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from masklab.kernels.triton_attention_tiles import PRE_BLOCK_T, PRE_NUM_WARPS, _Tuned, attention_grid, head_class, \
    load_tile, seq_bucket


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, cu_q, cu_k, POS, sm_scale, stride_qt, stride_qh,
                     stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, total_q, H, D, seq_bucket,
                     stride_gt, stride_gh,
                     HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, HAS_POS: tl.constexpr, UPCAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)  # B x H on axis 0 (limit 2^31-1)
    pid_n = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b)
    q_len = tl.load(cu_q + b + 1) - q0  # lengths and in-sequence offsets: i32; row offsets: i64
    k0 = tl.load(cu_k + b)
    k_len = tl.load(cu_k + b + 1) - k0
    q0 = q0.to(tl.int64)
    k0 = k0.to(tl.int64)
    n_start = pid_n * BLOCK_N
    if n_start >= k_len:
        return
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    k = load_tile(K + k0 * stride_kt + h * stride_kh, n_start, k_len, stride_kt, D, BLOCK_N, HEAD_DIM, UPCAST)
    v = load_tile(V + k0 * stride_vt + h * stride_vh, n_start, k_len, stride_vt, D, BLOCK_N, HEAD_DIM, UPCAST)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    lo = 0
    hi = q_len
    if WINDOW > 0:  # the row band; with POS a superset of the queries in the window
        lo = tl.maximum(n_start - WINDOW // 2, 0) // BLOCK_M * BLOCK_M
        hi = tl.minimum(n_start + BLOCK_N + WINDOW // 2, q_len)
    if HAS_POS:
        pos_n = tl.load(POS + k0 + offs_n, mask=offs_n < k_len, other=0)
    q_base = Q + q0 * stride_qt + h * stride_qh
    do_base = DO + q0 * stride_dot + h * stride_doh
    lse_base = LSE + h.to(tl.int64) * total_q + q0
    delta_base = DELTA + h.to(tl.int64) * total_q + q0
    for m_start in range(lo, hi, BLOCK_M):
        offs_m = m_start + offs_m0
        q = load_tile(q_base, m_start, q_len, stride_qt, D, BLOCK_M, HEAD_DIM, UPCAST)
        do = load_tile(do_base, m_start, q_len, stride_dot, D, BLOCK_M, HEAD_DIM, UPCAST)
        lse = tl.load(lse_base + offs_m, mask=offs_m < q_len, other=float("-inf"))
        delta = tl.load(delta_base + offs_m, mask=offs_m < q_len, other=0.0)
        s_t = tl.dot(k, tl.trans(q)) * sm_scale  # [BLOCK_N, BLOCK_M]
        valid = offs_n[:, None] < k_len
        if WINDOW > 0:
            if HAS_POS:
                dist = tl.load(POS + q0 + offs_m, mask=offs_m < q_len, other=0)[None, :] - pos_n[:, None]
            else:
                dist = offs_m[None, :] - offs_n[:, None]
            valid = valid & (dist <= WINDOW // 2) & (dist >= -(WINDOW // 2))
        lse_safe = tl.where(lse == float("-inf"), 0.0, lse)  # a query with no key has P = 0
        p_t = tl.where(valid & (lse[None, :] != float("-inf")), tl.exp(s_t - lse_safe[None, :]), 0.0)
        dv += tl.dot(p_t.to(do.dtype), do)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q)
    dk = dk * sm_scale
    # dk and dv are fresh contiguous buffers: their strides, not k's (k may be a view into qkv)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = (k0 + offs_n[:, None].to(tl.int64)) * stride_gt + h * stride_gh + offs_d[None, :]
    mask = (offs_n[:, None] < k_len) & (offs_d[None, :] < D)
    tl.store(DK + rows, dk.to(DK.dtype.element_ty), mask=mask)
    tl.store(DV + rows, dv.to(DV.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, cu_q, cu_k, POS, sm_scale, stride_qt, stride_qh,
                   stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, total_q, H, D, seq_bucket,
                   stride_gt, stride_gh,
                   HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, HAS_POS: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b)
    q_len = tl.load(cu_q + b + 1) - q0
    k0 = tl.load(cu_k + b)
    k_len = tl.load(cu_k + b + 1) - k0
    q0 = q0.to(tl.int64)
    k0 = k0.to(tl.int64)
    m_start = pid_m * BLOCK_M
    if m_start >= q_len:
        return
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    q = load_tile(Q + q0 * stride_qt + h * stride_qh, m_start, q_len, stride_qt, D, BLOCK_M, HEAD_DIM, UPCAST)
    do = load_tile(DO + q0 * stride_dot + h * stride_doh, m_start, q_len, stride_dot, D, BLOCK_M, HEAD_DIM, UPCAST)
    stat = h.to(tl.int64) * total_q + q0
    lse = tl.load(LSE + stat + offs_m, mask=offs_m < q_len, other=float("-inf"))
    delta = tl.load(DELTA + stat + offs_m, mask=offs_m < q_len, other=0.0)
    lse_safe = tl.where(lse == float("-inf"), 0.0, lse)  # a query with no key has P = 0
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = 0
    hi = k_len
    if WINDOW > 0:  # the row band; with POS a superset of the keys in the window
        lo = tl.maximum(m_start - WINDOW // 2, 0) // BLOCK_N * BLOCK_N
        hi = tl.minimum(m_start + BLOCK_M + WINDOW // 2, k_len)
    if HAS_POS:
        pos_m = tl.load(POS + q0 + offs_m, mask=offs_m < q_len, other=0)
    k_base = K + k0 * stride_kt + h * stride_kh
    v_base = V + k0 * stride_vt + h * stride_vh
    for n_start in range(lo, hi, BLOCK_N):
        cols = n_start + offs_n0
        k = load_tile(k_base, n_start, k_len, stride_kt, D, BLOCK_N, HEAD_DIM, UPCAST)
        v = load_tile(v_base, n_start, k_len, stride_vt, D, BLOCK_N, HEAD_DIM, UPCAST)
        s = tl.dot(q, tl.trans(k)) * sm_scale  # [BLOCK_M, BLOCK_N]
        valid = cols[None, :] < k_len
        if WINDOW > 0:
            if HAS_POS:
                dist = pos_m[:, None] - tl.load(POS + k0 + cols, mask=cols < k_len, other=0)[None, :]
            else:
                dist = offs_m[:, None] - cols[None, :]
            valid = valid & (dist <= WINDOW // 2) & (dist >= -(WINDOW // 2))
        p = tl.where(valid & (lse[:, None] != float("-inf")), tl.exp(s - lse_safe[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    dq = dq * sm_scale
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(DQ + (q0 + offs_m[:, None].to(tl.int64)) * stride_gt + h * stride_gh + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=(offs_m[:, None] < q_len) & (offs_d[None, :] < D))


@triton.jit
def _bwd_preprocess(O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, total_q, D,
                    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """delta[h, t] = sum_d dO[t, h, d] * O[t, h, d] (fp32): the softmax-backward row term."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = (rows[:, None] < total_q) & (offs_d[None, :] < D)
    r64 = rows[:, None].to(tl.int64)
    o = tl.load(O + r64 * stride_ot + h * stride_oh + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + r64 * stride_dot + h * stride_doh + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + h * total_q + rows, tl.sum(o * do, 1), mask=rows < total_q)


BWD_DKDV = _Tuned("dkdv", _bwd_dkdv_kernel)
BWD_DQ = _Tuned("dq", _bwd_dq_kernel)


def attention_backward(do, q, k, v, o, lse, cu_q, cu_k, max_q: int, max_k: int, scale: float, window: int,
                       head_dim_block: int, upcast: bool, positions=None):
    """do/o [Tq, H, d] contiguous, q [Tq, H, d], k/v [Tk, H, d], lse [H, Tq] fp32 -> dq, dk, dv (contiguous).
    positions int32 [T]: as in attention_forward."""
    Tq, H, D = q.shape
    B = cu_q.numel() - 1
    delta = torch.empty((H, Tq), device=q.device, dtype=torch.float32)  # rowsum(dO * O), fp32
    _bwd_preprocess[(triton.cdiv(Tq, PRE_BLOCK_T), H)](o, do, delta, o.stride(0), o.stride(1), do.stride(0),
                                                      do.stride(1), Tq, D, HEAD_DIM=head_dim_block,
                                                      BLOCK_T=PRE_BLOCK_T, num_warps=PRE_NUM_WARPS)
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    has_pos = positions is not None and window > 0
    common = (cu_q, cu_k, positions if has_pos else cu_q, scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
              v.stride(0), v.stride(1), do.stride(0), do.stride(1), Tq, H, D, seq_bucket(max(max_q, max_k)))
    hc = head_class(D)
    const = dict(HEAD_DIM=head_dim_block, WINDOW=window, HAS_POS=has_pos, UPCAST=upcast)
    BWD_DKDV[hc][lambda m: attention_grid(B * H, max_k, m["BLOCK_N"])](
        q, k, v, do, lse, delta, dk, dv, *common, dk.stride(0), dk.stride(1), **const)
    BWD_DQ[hc][lambda m: attention_grid(B * H, max_q, m["BLOCK_M"])](
        q, k, v, do, lse, delta, dq, *common, dq.stride(0), dq.stride(1), **const)
    return dq, dk, dv
