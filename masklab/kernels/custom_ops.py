"""The attention kernels as `torch.library` custom ops, so `torch.compile` graphs run through them.

Under `torch.compile` the encoder layer is one graph around an opaque `masklab::varlen_attention`
call (fake implementations give the output shapes; no graph break at the kernel), and inductor fuses
the GEMM epilogues, GELU/GeGLU, LayerNorm and RoPE glue around it. Eager calls skip the op and run
the implementation directly (`kernels.varlen_attention`). Backends: `triton` (its own forward and
backward kernels, lse saved) and `torch` (the reference; its backward recomputes the forward under
torch.func.vjp, as the op is opaque to autograd; a CPU / test path).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _forward(q, k, v, cu_q, cu_k, max_q, max_k, scale, window, backend, positions):
    if backend == "triton":
        import triton

        from masklab.kernels.attention import check_varlen_args
        from masklab.kernels.triton_attention import _check_tiles, triton_positions
        from masklab.kernels.triton_attention_fwd import attention_forward

        check_varlen_args(q, k, v, cu_q, cu_k, max_q, max_k, window or None, positions)
        _check_tiles(q.shape[2], (cu_q.numel() - 1) * q.shape[1], max(max_q, max_k))
        hd = max(16, triton.next_power_of_2(q.shape[2]))
        pos = None if positions is None or not window else triton_positions(positions)
        return attention_forward(q, k, v, cu_q, cu_k, max_q, scale, window, hd, pos)
    from masklab.kernels.attention import varlen_attention_torch

    return varlen_attention_torch(q, k, v, cu_q, cu_k, max_q, max_k, scale, window or None,
                                  positions=positions), q.new_empty(0)


@torch.library.custom_op("masklab::varlen_attention", mutates_args=())
def varlen_attention_op(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, max_q: int, max_k: int,
                        scale: float, window: int, backend: str, positions: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """q [Tq, H, d], k/v [Tk, H, d] (unit stride in d), cu int32 [B+1]; window 0 = none; positions
    int [T] or None (the window over true positions) -> (o [Tq, H, d] contiguous, lse [H, Tq] fp32 for
    triton, [0] for torch)."""
    return _forward(q, k, v, cu_q, cu_k, max_q, max_k, scale, window, backend, positions)


@varlen_attention_op.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, scale, window, backend, positions):
    lse_shape = (q.shape[1], q.shape[0]) if backend == "triton" else (0,)
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("masklab::varlen_attention_backward", mutates_args=())
def varlen_attention_backward_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, cu_q: Tensor,
                                 cu_k: Tensor, max_q: int, max_k: int, scale: float, window: int,
                                 backend: str, positions: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """do/o [Tq, H, d] -> (dq, dk, dv) contiguous."""
    if backend == "triton":
        import triton

        from masklab.kernels.dispatch import triton_interpreting
        from masklab.kernels.triton_attention import triton_positions
        from masklab.kernels.triton_attention_bwd import attention_backward

        return attention_backward(do.contiguous(), q, k, v, o, lse, cu_q, cu_k, max_q, max_k, scale, window,
                                  max(16, triton.next_power_of_2(q.shape[2])),
                                  triton_interpreting() and q.dtype == torch.bfloat16,
                                  None if positions is None or not window else triton_positions(positions))
    from masklab.kernels.attention import varlen_attention_torch

    # autograd is switched off inside a custom op's body; torch.func's vjp runs its own grad level
    _, vjp = torch.func.vjp(lambda q_, k_, v_: varlen_attention_torch(q_, k_, v_, cu_q, cu_k, max_q, max_k, scale,
                                                                     window or None, positions=positions), q, k, v)
    return tuple(g.contiguous() for g in vjp(do))


@varlen_attention_backward_op.register_fake
def _(do, q, k, v, o, lse, cu_q, cu_k, max_q, max_k, scale, window, backend, positions):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_q, max_k, scale, window, backend, positions = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], cu_q, cu_k, positions)
    ctx.args = (max_q, max_k, scale, window, backend)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, cu_q, cu_k, positions = ctx.saved_tensors
    dq, dk, dv = varlen_attention_backward_op(do, q, k, v, o, lse, cu_q, cu_k, *ctx.args, positions)
    return dq, dk, dv, None, None, None, None, None, None, None, None


varlen_attention_op.register_autograd(_backward, setup_context=_setup_context)


def varlen_attention_compiled(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                              window, backend: str, positions: Optional[Tensor] = None) -> Tensor:
    """The op inside a compiled graph -> [Tq, H, d]; arguments as `kernels.varlen_attention` (checked
    inside the op, on real tensors: a host-side check here would break the graph)."""
    import math

    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return varlen_attention_op(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                               float(scale), int(window or 0), backend, positions)[0]
