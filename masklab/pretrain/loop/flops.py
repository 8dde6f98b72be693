"""FLOP accounting: the model's own formula, counted on the rows each layer actually runs on.

Matmul FLOPs only (2 per multiply-add), forward x 3 for forward + backward. One encoder layer
over sequences whose key/value rows number k_b and query rows q_b (q_b = k_b except on a sparse
last layer) costs, with hidden size d, MLP width i (BERT: 2 matmuls, ModernBERT's GLU: 3):

    projections  2 d^2 (2 sum k_b + 2 sum q_b)     K, V over every row; Q and the output over query rows
    attention    4 d sum q_b k_b                   QK^T and AV
    MLP          2 m d i sum q_b                   m = 2 (bert) | 3 (modernbert)

What runs differs per layer (`batch_layer_lens`):
- late-mask insertion (masking.insertion=late): layers < insert_layer see only the visible stream;
- Token Dropping (model.token_drop, training only): layers [start, end), never the last, see only
  the kept rows (each sequence drops min(floor(rate * n), droppable) rows, droppable = rows that are
  neither special nor predicted, exactly as pretrain/model/token_drop.py plans them);
- sparse_prediction=last_layer: the last layer's queries are the predicted rows only;
- the MLM head (dense d x d transform + d x V decoder) runs on the predicted rows, or on every row
  with sparse_prediction=none.
ModernBERT's local layers are charged full attention (what the torch reference computes; a
windowed kernel does less), so its utilisation is a lower bound there.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

Lens = np.ndarray  # int64 [B]: rows per sequence


def layer_flops(model_cfg, k_lens: Lens, q_lens: Optional[Lens] = None) -> float:
    """Forward matmul FLOPs of one encoder layer (k_lens, q_lens: int64 [B])."""
    d, i = model_cfg.hidden_size, model_cfg.intermediate_size
    k = np.asarray(k_lens, dtype=np.float64)
    q = k if q_lens is None else np.asarray(q_lens, dtype=np.float64)
    m = 3 if model_cfg.preset == "modernbert" else 2
    return float(2 * d * d * (2 * k.sum() + 2 * q.sum()) + 4 * d * (q * k).sum() + 2 * m * d * i * q.sum())


def head_flops(model_cfg, vocab: int, rows: int) -> float:
    """Forward matmul FLOPs of the MLM head over `rows` rows (transform d x d, decoder d x V)."""
    d = model_cfg.hidden_size
    return float(2 * rows * (d * d + d * vocab))


def step_flops(model_cfg, vocab: int, seq_lens, n_pred: int,
               layer_lens: Optional[Sequence[tuple[Lens, Optional[Lens]]]] = None, head_rows: Optional[int] = None) -> float:
    """Executed FLOPs of fwd + bwd (3x fwd) of one unpadded micro-batch. seq_lens int [B];
    layer_lens: per layer (k_lens, q_lens) as `batch_layer_lens` gives them (None: every layer on
    every row, the dense model); head_rows: rows of the MLM head (None: n_pred)."""
    lens = np.asarray(seq_lens.cpu() if isinstance(seq_lens, torch.Tensor) else seq_lens, dtype=np.int64)
    if layer_lens is None:
        layer_lens = [(lens, None)] * model_cfg.num_layers
    body = sum(layer_flops(model_cfg, k, q) for k, q in layer_lens)
    return 3.0 * (body + head_flops(model_cfg, vocab, n_pred if head_rows is None else head_rows))


def _lens(cu: torch.Tensor) -> Lens:
    cu = cu.cpu().long().numpy()
    return np.diff(cu)


def token_drop_kept_lens(td_cfg, num_layers: int, b, special_ids) -> Optional[tuple[Lens, int, int]]:
    """(kept rows per sequence int64 [B], start, end) of Token Dropping for batch b, or None when off."""
    if td_cfg is None or td_cfg.rate <= 0:
        return None
    end = td_cfg.end_layer if td_cfg.end_layer >= 0 else num_layers + td_cfg.end_layer
    lens = _lens(b.cu_seqlens)
    seq = np.repeat(np.arange(len(lens)), lens)
    ids = b.input_ids.cpu().numpy()
    protected = np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))
    protected[b.mlm_positions.cpu().numpy()] = True
    droppable = np.bincount(seq[~protected], minlength=len(lens))
    n_drop = np.minimum(np.floor(lens * float(td_cfg.rate)).astype(np.int64), droppable)
    return lens - n_drop, int(td_cfg.start_layer), end


def batch_layer_lens(model_cfg, b, insert_layer: int = 0, special_ids=()) -> list[tuple[Lens, Optional[Lens]]]:
    """Per layer, (key/value rows, query rows or None = same) per sequence of a training batch b
    (an UnpaddedBatch on CPU), following what EncoderMLM.forward runs."""
    L = model_cfg.num_layers
    full = _lens(b.cu_seqlens)
    out: list[tuple[Lens, Optional[Lens]]] = [(full, None)] * L
    if insert_layer > 0 and b.cu_seqlens_visible is not None:
        vis = _lens(b.cu_seqlens_visible)
        out[:insert_layer] = [(vis, None)] * insert_layer
    else:  # late insertion and Token Dropping exclude each other (config_validation)
        td = token_drop_kept_lens(getattr(model_cfg, "token_drop", None), L, b, special_ids)
        if td is not None:
            kept, start, end = td
            for i in range(start, min(end, L - 1)):  # the last layer always sees every row
                out[i] = (kept, None)
    if model_cfg.sparse_prediction == "last_layer":
        out[L - 1] = (out[L - 1][0], _lens(b.mlm_cu_seqlens))
    return out


def batch_flops(model_cfg, vocab: int, b, insert_layer: int = 0, special_ids=()) -> float:
    """Executed fwd + bwd matmul FLOPs of one training micro-batch b (what the log's utilisation uses)."""
    head = b.num_tokens if model_cfg.sparse_prediction == "none" else b.num_predictions
    return step_flops(model_cfg, vocab, b.cu_seqlens[1:] - b.cu_seqlens[:-1], b.num_predictions,
                      layer_lens=batch_layer_lens(model_cfg, b, insert_layer, special_ids), head_rows=head)
