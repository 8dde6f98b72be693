"""Masked-token gather + MLM head + cross-entropy: argument checks and the PyTorch reference.

The reference materialises the [M, V] logits; the Triton version (kernels/triton_mlm_loss.py)
has the same signature and chunks over the vocabulary instead.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def check_mlm_args(hidden, positions, labels, decoder_weight) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [total_tokens, dim], got {tuple(hidden.shape)}")
    if positions.dtype != torch.int64 or labels.dtype != torch.int64:
        raise TypeError(f"mlm_positions and mlm_labels must be int64, got {positions.dtype}, {labels.dtype}")
    if positions.shape != labels.shape or positions.dim() != 1:
        raise ValueError(f"mlm_positions {tuple(positions.shape)} and mlm_labels {tuple(labels.shape)} must be equal 1-D")
    if decoder_weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"decoder_weight {tuple(decoder_weight.shape)} does not match hidden dim {hidden.shape[1]}")
    if hidden.device != positions.device or hidden.device != decoder_weight.device:
        raise ValueError("hidden, mlm_positions and decoder_weight must be on the same device")
    if positions.numel() and positions.device.type == "cpu":
        if int(positions.min()) < 0 or int(positions.max()) >= hidden.shape[0]:
            raise IndexError(f"mlm_positions out of range for {hidden.shape[0]} tokens")
        real = labels[labels != IGNORE_INDEX]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= decoder_weight.shape[0]):
            raise IndexError(f"mlm_labels out of range for vocab {decoder_weight.shape[0]}")


def head_transform(x, dense_weight, dense_bias, ln_weight, ln_bias, ln_eps):
    """BERT prediction-head transform: LayerNorm(GELU(x W^T + b)). Biases may be None."""
    x = F.linear(x, dense_weight, dense_bias)
    x = F.gelu(x)
    return F.layer_norm(x, (x.shape[-1],), ln_weight, ln_bias, ln_eps)


def masked_token_loss_torch(hidden: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor,
                            dense_weight: torch.Tensor, dense_bias: Optional[torch.Tensor],
                            ln_weight: torch.Tensor, ln_bias: Optional[torch.Tensor],
                            decoder_weight: torch.Tensor, decoder_bias: Optional[torch.Tensor],
                            ln_eps: float = 1e-12, vocab_chunk: int = 4096):
    """hidden [T, D]; positions/labels [M] int64 (label -100 = padding of M, ignored);
    head params; decoder_weight [V, D] (tied), decoder_bias [V].
    Returns (loss_sum: fp32 scalar, n_correct: int64 scalar)."""
    check_mlm_args(hidden, positions, labels, decoder_weight)
    x = hidden.index_select(0, positions)
    x = head_transform(x, dense_weight, dense_bias, ln_weight, ln_bias, ln_eps)
    logits = F.linear(x, decoder_weight, decoder_bias)
    if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax runs in fp32 (fp64 stays fp64)
        logits = logits.float()
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        n_correct = ((logits.argmax(-1) == labels) & (labels != IGNORE_INDEX)).sum()
    return loss, n_correct
