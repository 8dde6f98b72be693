"""Varlen (unpadded) flash attention in Triton: forward, and a backward of its own (dq, dk, dv).

Same signature and semantics as `kernels.attention.varlen_attention_torch`: q [Tq, H, d],
k/v [Tk, H, d] packed per `cu_seqlens_q/k` (int32 [B+1]); non-causal; optional sliding window
(query i sees key j iff |i - j| <= window // 2); a query that sees no key (its sequence has no
keys, or none inside its window) outputs 0. Grid: (blocks over max_seqlen, batch x heads).
Online softmax; the forward saves the logsumexp [H, Tq] (fp32); no [L x L] matrix exists.
The backward is deterministic (no atomics): a preprocess kernel writes delta = rowsum(dO * O)
[H, Tq], one kernel per key block writes dk/dv, one per query block writes dq. Autotuned (on
GPU) over a short config list keyed on head dim, window and a max-seqlen bucket. On GPU the
tiles go to `tl.dot` in bf16/fp16 with fp32 accumulation; in the interpreter bf16 is upcast
after loading (its bf16 arithmetic is broken).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from masklab.kernels.attention import check_varlen_args
from masklab.kernels.dispatch import triton_interpreting

MAX_GRID_YZ = 65535
LOG2E = 1.4426950408889634

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per head-dim class (<= 64, 128): every config here
# compiles for sm_90 and sm_80 without register spills (`masklab gpu-check`). The interpreter
# gets one config (autotune needs a GPU).
FWD_CONFIGS = {64: [(128, 64, 8, 3), (64, 64, 4, 3)],
               128: [(64, 64, 8, 2), (64, 32, 8, 2)]}
BWD_CONFIGS = {64: [(32, 64, 8, 2), (32, 32, 4, 2)],
               128: [(32, 32, 8, 2), (32, 32, 4, 2)]}
INTERPRET_CONFIG = (32, 32, 4, 1)
PRE_BLOCK_T = 64  # rows per program of the delta preprocess
PRE_NUM_WARPS = 8  # 4 warps spill at d128 on sm_90 (gpu-check): 64 x 128 x 2 fp32 values + int64 pointers


def head_class(head_dim: int) -> int:
    return 64 if head_dim <= 64 else 128


def seq_bucket(max_seqlen: int) -> int:
    """Autotune key for the length: powers of two from 64 to 8192 (few re-tunes, lengths differ per batch)."""
    return min(max(64, triton.next_power_of_2(max(int(max_seqlen), 1))), 8192)


def _configs(table):
    if triton_interpreting():
        m, n, w, s = INTERPRET_CONFIG
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in table]


@triton.jit
def _load_block(ptr, rows, n_rows, stride_t, offs_d, D, UPCAST: tl.constexpr):
    x = tl.load(ptr + rows[:, None].to(tl.int64) * stride_t + offs_d[None, :],
                mask=(rows[:, None] < n_rows) & (offs_d[None, :] < D), other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, cu_q, cu_k, sm_scale, stride_qt, stride_qh, stride_kt, stride_kh,
                stride_vt, stride_vh, stride_ot, stride_oh, total_q, H, D, seq_bucket,
                HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, UPCAST: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b).to(tl.int64)
    q_len = tl.load(cu_q + b + 1).to(tl.int64) - q0
    k0 = tl.load(cu_k + b).to(tl.int64)
    k_len = tl.load(cu_k + b + 1).to(tl.int64) - k0
    m_start = pid_m * BLOCK_M
    if m_start >= q_len:
        return
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_block(Q + q0 * stride_qt + h * stride_qh, offs_m, q_len, stride_qt, offs_d, D, UPCAST)
    qk_scale = sm_scale * 1.4426950408889634  # exp2 is cheaper than exp
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = 0
    hi = k_len
    if WINDOW > 0:
        lo = tl.maximum(m_start - WINDOW // 2, 0) // BLOCK_N * BLOCK_N
        hi = tl.minimum(m_start + BLOCK_M + WINDOW // 2, k_len)
    k_base = K + k0 * stride_kt + h * stride_kh
    v_base = V + k0 * stride_vt + h * stride_vh
    for n_start in range(lo, hi, BLOCK_N):
        cols = n_start + offs_n
        k = _load_block(k_base, cols, k_len, stride_kt, offs_d, D, UPCAST)
        v = _load_block(v_base, cols, k_len, stride_vt, offs_d, D, UPCAST)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        valid = cols[None, :] < k_len
        if WINDOW > 0:
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


@triton.jit
def _recompute_p(q, k, lse, offs_m, cols, k_len, sm_scale, WINDOW: tl.constexpr):
    s = tl.dot(q, tl.trans(k)) * sm_scale
    valid = cols[None, :] < k_len
    if WINDOW > 0:
        dist = offs_m[:, None] - cols[None, :]
        valid = valid & (dist <= WINDOW // 2) & (dist >= -(WINDOW // 2))
    lse_safe = tl.where(lse == float("-inf"), 0.0, lse)
    return tl.where(valid & (lse[:, None] != float("-inf")), tl.exp(s - lse_safe[:, None]), 0.0)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, cu_q, cu_k, sm_scale, stride_qt, stride_qh,
                     stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, total_q, H, D, seq_bucket,
                     stride_gt, stride_gh,
                     HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, UPCAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b).to(tl.int64)
    q_len = tl.load(cu_q + b + 1).to(tl.int64) - q0
    k0 = tl.load(cu_k + b).to(tl.int64)
    k_len = tl.load(cu_k + b + 1).to(tl.int64) - k0
    n_start = pid_n * BLOCK_N
    if n_start >= k_len:
        return
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    k = _load_block(K + k0 * stride_kt + h * stride_kh, offs_n, k_len, stride_kt, offs_d, D, UPCAST)
    v = _load_block(V + k0 * stride_vt + h * stride_vh, offs_n, k_len, stride_vt, offs_d, D, UPCAST)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    lo = 0
    hi = q_len
    if WINDOW > 0:
        lo = tl.maximum(n_start - WINDOW // 2, 0) // BLOCK_M * BLOCK_M
        hi = tl.minimum(n_start + BLOCK_N + WINDOW // 2, q_len)
    q_base = Q + q0 * stride_qt + h * stride_qh
    do_base = DO + q0 * stride_dot + h * stride_doh
    stat = h.to(tl.int64) * total_q + q0
    for m_start in range(lo, hi, BLOCK_M):
        offs_m = m_start + offs_m0
        q = _load_block(q_base, offs_m, q_len, stride_qt, offs_d, D, UPCAST)
        do = _load_block(do_base, offs_m, q_len, stride_dot, offs_d, D, UPCAST)
        lse = tl.load(LSE + stat + offs_m, mask=offs_m < q_len, other=float("-inf"))
        delta = tl.load(DELTA + stat + offs_m, mask=offs_m < q_len, other=0.0)
        p = _recompute_p(q, k, lse, offs_m, offs_n, k_len, sm_scale, WINDOW)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    dk = dk * sm_scale
    mask = (offs_n[:, None] < k_len) & (offs_d[None, :] < D)
    # dk and dv are fresh contiguous buffers: their strides, not k's (k may be a view into qkv)
    rows = (k0 + offs_n[:, None].to(tl.int64)) * stride_gt + h * stride_gh + offs_d[None, :]
    tl.store(DK + rows, dk.to(DK.dtype.element_ty), mask=mask)
    tl.store(DV + rows, dv.to(DV.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, cu_q, cu_k, sm_scale, stride_qt, stride_qh,
                   stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, total_q, H, D, seq_bucket,
                   stride_gt, stride_gh,
                   HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    q0 = tl.load(cu_q + b).to(tl.int64)
    q_len = tl.load(cu_q + b + 1).to(tl.int64) - q0
    k0 = tl.load(cu_k + b).to(tl.int64)
    k_len = tl.load(cu_k + b + 1).to(tl.int64) - k0
    m_start = pid_m * BLOCK_M
    if m_start >= q_len:
        return
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_block(Q + q0 * stride_qt + h * stride_qh, offs_m, q_len, stride_qt, offs_d, D, UPCAST)
    do = _load_block(DO + q0 * stride_dot + h * stride_doh, offs_m, q_len, stride_dot, offs_d, D, UPCAST)
    stat = h.to(tl.int64) * total_q + q0
    lse = tl.load(LSE + stat + offs_m, mask=offs_m < q_len, other=float("-inf"))
    delta = tl.load(DELTA + stat + offs_m, mask=offs_m < q_len, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = 0
    hi = k_len
    if WINDOW > 0:
        lo = tl.maximum(m_start - WINDOW // 2, 0) // BLOCK_N * BLOCK_N
        hi = tl.minimum(m_start + BLOCK_M + WINDOW // 2, k_len)
    k_base = K + k0 * stride_kt + h * stride_kh
    v_base = V + k0 * stride_vt + h * stride_vh
    for n_start in range(lo, hi, BLOCK_N):
        cols = n_start + offs_n0
        k = _load_block(k_base, cols, k_len, stride_kt, offs_d, D, UPCAST)
        v = _load_block(v_base, cols, k_len, stride_vt, offs_d, D, UPCAST)
        p = _recompute_p(q, k, lse, offs_m, cols, k_len, sm_scale, WINDOW)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    dq = dq * sm_scale
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


def _tuned(kernel, table):
    # keyed on head dim, window and length bucket: the best tile differs between L=128 and L=512
    return {hc: triton.autotune(configs=_configs(cfgs), key=["HEAD_DIM", "WINDOW", "seq_bucket"])(kernel)
            for hc, cfgs in table.items()}


_FWD = _tuned(_fwd_kernel, FWD_CONFIGS)
_BWD_DKDV = _tuned(_bwd_dkdv_kernel, BWD_CONFIGS)
_BWD_DQ = _tuned(_bwd_dq_kernel, BWD_CONFIGS)


def check_launch(head_dim: int, block_m: int, block_n: int, grid_y: int) -> None:
    """What the interpreter cannot catch: GPU tile rules and grid limits, checked in Python."""
    for name, blk in (("BLOCK_M", block_m), ("BLOCK_N", block_n)):
        if blk < 16 or blk & (blk - 1):
            raise ValueError(f"{name}={blk} must be a power of two >= 16 (tl.dot needs K, M, N >= 16)")
    hd = max(16, triton.next_power_of_2(head_dim))
    if hd > 256:
        raise ValueError(f"head_dim {head_dim} needs BLOCK_D={hd} > 256")
    if grid_y > MAX_GRID_YZ:
        raise ValueError(f"grid axis 1 = batch x heads = {grid_y} exceeds {MAX_GRID_YZ}; split the batch")


class _VarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, scale, window):
        Tq, H, D = q.shape
        B = cu_q.numel() - 1
        HD = max(16, triton.next_power_of_2(D))
        hc = head_class(D)
        for cfg in (FWD_CONFIGS[hc] + BWD_CONFIGS[hc] if not triton_interpreting() else [INTERPRET_CONFIG]):
            check_launch(D, cfg[0], cfg[1], B * H)
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        o = torch.empty(q.shape, device=q.device, dtype=q.dtype)  # contiguous, whatever q's strides
        lse = torch.empty((H, Tq), device=q.device, dtype=torch.float32)
        upcast = triton_interpreting() and q.dtype == torch.bfloat16
        w = int(window or 0)
        _FWD[hc][lambda m: (triton.cdiv(max(max_q, 1), m["BLOCK_M"]), B * H)](
            q, k, v, o, lse, cu_q, cu_k, scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            v.stride(0), v.stride(1), o.stride(0), o.stride(1), Tq, H, D, seq_bucket(max_q),
            HEAD_DIM=HD, WINDOW=w, UPCAST=upcast)
        ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k)
        ctx.args = (max_q, max_k, scale, w, HD, upcast)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
        max_q, max_k, scale, w, HD, upcast = ctx.args
        do = do.contiguous()
        Tq, H, D = q.shape
        B = cu_q.numel() - 1
        delta = torch.empty((H, Tq), device=q.device, dtype=torch.float32)  # rowsum(dO * O), fp32
        _bwd_preprocess[(triton.cdiv(Tq, PRE_BLOCK_T), H)](o, do, delta, o.stride(0), o.stride(1), do.stride(0),
                                                          do.stride(1), Tq, D, HEAD_DIM=HD, BLOCK_T=PRE_BLOCK_T,
                                                          num_warps=PRE_NUM_WARPS)
        dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
        dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
        dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
        common = (cu_q, cu_k, scale, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                  do.stride(0), do.stride(1), Tq, H, D, seq_bucket(max(max_q, max_k)))
        hc = head_class(D)
        _BWD_DKDV[hc][lambda m: (triton.cdiv(max(max_k, 1), m["BLOCK_N"]), B * H)](
            q, k, v, do, lse, delta, dk, dv, *common, dk.stride(0), dk.stride(1), HEAD_DIM=HD, WINDOW=w, UPCAST=upcast)
        _BWD_DQ[hc][lambda m: (triton.cdiv(max(max_q, 1), m["BLOCK_M"]), B * H)](
            q, k, v, do, lse, delta, dq, *common, dq.stride(0), dq.stride(1), HEAD_DIM=HD, WINDOW=w, UPCAST=upcast)
        return dq, dk, dv, None, None, None, None, None, None


def varlen_attention_triton(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale=None, window=None) -> torch.Tensor:
    """Triton flash attention over packed sequences -> [Tq, H, d] (see module docstring)."""
    check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window)
    if q.shape[0] == 0:
        return q.clone()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return _VarlenAttention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                  float(scale), window)
