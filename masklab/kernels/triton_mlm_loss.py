"""Masked-token gather + MLM head + vocabulary-chunked cross-entropy that never builds [M, V] logits.

Same signature as `kernels.mlm_loss.masked_token_loss_torch`. The M predicted rows are
gathered from hidden [T, D], run through the head transform (dense + GELU + LayerNorm,
autograd), then the tied decoder + cross-entropy goes vocab chunk by chunk (C columns):
  forward : logits_c = x W_c^T + b_c (one GEMM), a Triton kernel folds the chunk into a running
            online logsumexp, the target logit and the running argmax, per row;
  backward: logits_c is recomputed, a Triton kernel turns it in place into
            (softmax - onehot) * grad, and two GEMMs give dx += g W_c and dW_c = g^T x.
Peak extra memory is one [M, C] chunk instead of [M, V]. GEMMs stay in cuBLAS, which no
hand-written tile loop beats; the kernels fuse the softmax/CE arithmetic around them.
`masked_token_loss_chunked_torch` is the same algorithm with torch ops (CPU, benchmarks).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from masklab.kernels.dispatch import triton_interpreting
from masklab.kernels.mlm_loss import IGNORE_INDEX, check_mlm_args, head_transform

BLOCK_ROWS = 16
BLOCK_COLS = 128  # wider fp32 tiles spill on sm_80/sm_90 (masklab gpu-check)
BWD_BLOCK_COLS = 256  # the backward tile holds no running state: wider fits


@triton.jit
def _ce_fwd_chunk(LOGITS, stride_l, LABELS, RUN_M, RUN_L, TGT, BEST, BEST_IDX, M, C, v_offset,
                  BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    labels = tl.load(LABELS + rows, mask=rmask, other=-1) - v_offset
    m_run = tl.load(RUN_M + rows, mask=rmask, other=0.0)
    l_run = tl.load(RUN_L + rows, mask=rmask, other=0.0)
    tgt = tl.load(TGT + rows, mask=rmask, other=0.0)
    best = tl.load(BEST + rows, mask=rmask, other=0.0)
    best_idx = tl.load(BEST_IDX + rows, mask=rmask, other=0)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < C
        s = tl.load(LOGITS + rows[:, None].to(tl.int64) * stride_l + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=float("-inf")).to(tl.float32)
        tile_max = tl.max(s, 1)
        m_new = tl.maximum(m_run, tile_max)
        l_run = l_run * tl.exp(m_run - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m_run = m_new
        # the column mask too: a label of the next chunk can equal a tail column past C (s = -inf there)
        hit = (cols[None, :] == labels[:, None]) & cmask[None, :]
        tgt += tl.sum(tl.where(hit, s, 0.0), 1)
        # first index of the tile maximum; strictly greater keeps the earliest chunk on ties
        tile_arg = tl.min(tl.where(s == tile_max[:, None], cols[None, :], 2147483647), 1)
        better = tile_max > best
        best_idx = tl.where(better, tile_arg.to(tl.int64) + v_offset, best_idx)
        best = tl.where(better, tile_max, best)
    tl.store(RUN_M + rows, m_run, mask=rmask)
    tl.store(RUN_L + rows, l_run, mask=rmask)
    tl.store(TGT + rows, tgt, mask=rmask)
    tl.store(BEST + rows, best, mask=rmask)
    tl.store(BEST_IDX + rows, best_idx, mask=rmask)


@triton.jit
def _ce_bwd_chunk(LOGITS, stride_l, LABELS, LSE, GRAD, M, C, v_offset,
                  BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    # GRAD: the incoming d(loss_sum), read on the device (a float() of it would sync the GPU)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = rows < M
    mask = rmask[:, None] & (cols[None, :] < C)
    raw = tl.load(LABELS + rows, mask=rmask, other=-100)
    labels = raw - v_offset
    lse = tl.load(LSE + rows, mask=rmask, other=0.0)
    ptr = LOGITS + rows[:, None].to(tl.int64) * stride_l + cols[None, :]
    s = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    g = tl.exp(s - lse[:, None]) - tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)
    g = tl.where((raw != -100)[:, None], g * tl.load(GRAD).to(tl.float32), 0.0)
    tl.store(ptr, g.to(LOGITS.dtype.element_ty), mask=mask)


def _fold_triton(logits, labels, state, v0):
    M, C = logits.shape
    _ce_fwd_chunk[(triton.cdiv(M, BLOCK_ROWS),)](logits, logits.stride(0), labels, *state, M, C, v0,
                                                 BLOCK_M=BLOCK_ROWS, BLOCK_C=min(BLOCK_COLS, triton.next_power_of_2(C)))


def _fold_torch(logits, labels, state, v0):
    run_m, run_l, tgt, best, best_idx = state
    s = logits.to(run_m.dtype)
    tile_max, tile_arg = s.max(1)
    m_new = torch.maximum(run_m, tile_max)
    run_l.mul_(torch.exp(run_m - m_new)).add_((s - m_new[:, None]).exp_().sum(1))  # one [M, C] temporary
    run_m.copy_(m_new)
    local = labels - v0
    inside = (local >= 0) & (local < s.shape[1])
    tgt.add_(torch.where(inside, s.gather(1, local.clamp(0, s.shape[1] - 1)[:, None])[:, 0], 0.0))
    better = tile_max > best
    best_idx.copy_(torch.where(better, tile_arg + v0, best_idx))
    best.copy_(torch.where(better, tile_max, best))


def _grad_triton(logits, labels, lse, v0, scale):
    """In place: logits [M, C] -> (softmax - onehot) * scale, zero rows for label -100; scale: 0-dim tensor."""
    M, C = logits.shape
    bc = min(BWD_BLOCK_COLS, triton.next_power_of_2(C))
    grid = (triton.cdiv(M, BLOCK_ROWS), triton.cdiv(C, bc))
    if grid[1] > 65535:
        raise ValueError(f"vocab_chunk={C} needs {grid[1]} column blocks > 65535; use a smaller vocab_chunk")
    _ce_bwd_chunk[grid](logits, logits.stride(0), labels, lse, scale, M, C, v0, BLOCK_M=BLOCK_ROWS, BLOCK_C=bc)
    return logits


def _grad_torch(logits, labels, lse, v0, scale):  # the torch twin of _grad_triton
    # in place on the chunk: one [M, C] buffer alive, as in the Triton kernel
    g = logits if logits.dtype == lse.dtype else logits.to(lse.dtype)
    g.sub_(lse[:, None]).exp_()
    local = labels - v0
    rows = torch.nonzero((local >= 0) & (local < g.shape[1])).flatten()
    g[rows, local[rows]] -= 1.0
    g[labels == IGNORE_INDEX] = 0.0
    g.mul_(scale)
    return g.to(logits.dtype)


def _acc_dtype(dtype):
    """fp32 statistics and gradient sums (fp64 stays fp64, as in the reference, for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _ChunkedLinearCE(torch.autograd.Function):
    """x [M, D], weight [V, D], bias [V] | None, labels [M] -> (loss_sum fp32, n_correct int64)."""

    @staticmethod
    def forward(ctx, x, weight, bias, labels, chunk, use_triton):
        M, V = x.shape[0], weight.shape[0]
        f = dict(device=x.device, dtype=_acc_dtype(x.dtype))
        # running max, running sum of exp, target logit, best logit, its index; per row
        state = (torch.full((M,), float("-inf"), **f), torch.zeros(M, **f), torch.zeros(M, **f),
                 torch.full((M,), float("-inf"), **f), torch.zeros(M, device=x.device, dtype=torch.int64))
        fold = _fold_triton if use_triton else _fold_torch
        for v0 in range(0, V, chunk):
            w = weight[v0:v0 + chunk]
            logits = torch.addmm(bias[v0:v0 + chunk], x, w.t()) if bias is not None else x @ w.t()
            fold(logits, labels, state, v0)
        run_m, run_l, tgt, _, best_idx = state
        lse = run_m + torch.log(run_l)
        valid = labels != IGNORE_INDEX
        loss = torch.where(valid, lse - tgt, 0.0).sum()
        n_correct = ((best_idx == labels) & valid).sum()
        ctx.save_for_backward(x, weight, bias, labels, lse)
        ctx.chunk, ctx.use_triton = chunk, use_triton
        ctx.mark_non_differentiable(n_correct)
        return loss, n_correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        x, weight, bias, labels, lse = ctx.saved_tensors
        chunk, V = ctx.chunk, weight.shape[0]
        grad_fn = _grad_triton if ctx.use_triton else _grad_torch
        acc = _acc_dtype(x.dtype)
        dx = torch.zeros(x.shape, device=x.device, dtype=acc)
        dw = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        db = torch.empty(V, device=x.device, dtype=acc) if bias is not None and ctx.needs_input_grad[2] else None
        scale = grad_loss.to(acc).reshape(())
        for v0 in range(0, V, chunk):
            w = weight[v0:v0 + chunk]
            logits = torch.addmm(bias[v0:v0 + chunk], x, w.t()) if bias is not None else x @ w.t()
            g = grad_fn(logits, labels, lse, v0, scale)  # in place: no second [M, C] buffer
            dx += (g @ w).to(acc)
            if dw is not None:
                dw[v0:v0 + chunk] = (g.t() @ x).to(dw.dtype)
            if db is not None:
                db[v0:v0 + chunk] = g.to(acc).sum(0)
        return dx.to(x.dtype), dw, (db.to(bias.dtype) if db is not None else None), None, None, None


def _masked_token_loss(use_triton: bool, hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
                       decoder_weight, decoder_bias, ln_eps, vocab_chunk):
    check_mlm_args(hidden, positions, labels, decoder_weight)
    if int(vocab_chunk) < 1:
        raise ValueError(f"vocab_chunk must be >= 1, got {vocab_chunk}")
    if use_triton:
        from masklab.kernels.triton_rows import gather_rows_triton as gather
    else:
        from masklab.kernels.rows import gather_rows_torch as gather
    x = head_transform(gather(hidden, positions), dense_weight, dense_bias, ln_weight, ln_bias, ln_eps)
    # Under autocast, layer_norm hands back fp32 while addmm would run in the autocast dtype in forward
    # only (backward runs without autocast): cast x, W, b to one GEMM dtype here, so forward and the
    # backward recomputation build the same logits; the CE statistics stay fp32.
    gemm_dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    x = x.to(gemm_dtype)
    decoder_weight = decoder_weight.to(gemm_dtype)
    decoder_bias = decoder_bias.to(gemm_dtype) if decoder_bias is not None else None
    if x.shape[0] == 0:
        # zero loss that still reaches every parameter (zero grads, not None: DDP expects all of them)
        zero = x.sum() + decoder_weight.sum() * 0
        zero = (zero + decoder_bias.sum() * 0 if decoder_bias is not None else zero).float()
        return zero, torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.autocast(x.device.type, enabled=False):  # the inputs already carry the GEMM dtype
        return _ChunkedLinearCE.apply(x, decoder_weight, decoder_bias, labels, int(vocab_chunk), use_triton)


def masked_token_loss_triton(hidden, positions, labels, dense_weight, dense_bias: Optional[torch.Tensor],
                             ln_weight, ln_bias: Optional[torch.Tensor], decoder_weight,
                             decoder_bias: Optional[torch.Tensor], ln_eps: float = 1e-12, vocab_chunk: int = 4096):
    """hidden [T, D]; positions/labels [M] int64 -> (loss_sum fp32 scalar, n_correct int64 scalar)."""
    return _masked_token_loss(True, hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
                              decoder_weight, decoder_bias, ln_eps, vocab_chunk)


def masked_token_loss_chunked_torch(hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
                                    decoder_weight, decoder_bias, ln_eps: float = 1e-12, vocab_chunk: int = 4096):
    """The same vocab-chunked algorithm in plain torch (CPU-friendly; no [M, V] logits)."""
    return _masked_token_loss(False, hidden, positions, labels, dense_weight, dense_bias, ln_weight, ln_bias,
                              decoder_weight, decoder_bias, ln_eps, vocab_chunk)


__all__ = ["masked_token_loss_triton", "masked_token_loss_chunked_torch", "triton_interpreting"]
