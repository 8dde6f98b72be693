"""What both presets share: the one layer loop, late-mask insertion, sparse prediction, the MLM losses.

A preset file (bert.py, modernbert.py) keeps only what differs: its embeddings, its layer, where
its norms sit (`final_norm`), its head, and `stream()` (per-stream tables such as RoPE). Every
path that runs layers goes through `run_layers`, so a change to how layers are applied (token
dropping, activation checkpointing) is made in one place.

Runs unpadded end to end: hidden states are [T, D] for the packed tokens of a batch. Kernels are
reached only through `masklab.kernels`, always with this model's `backend` (no process-wide
setting), so two models with different backends can live in one process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels
from masklab.pretrain.batch import UnpaddedBatch


@dataclass(frozen=True)
class Stream:
    """What every layer over one packed stream needs besides (cu_seqlens, max_seqlen), built once
    per forward and stream (full or visible)."""

    backend: str = "auto"  # kernels backend (auto | triton | flash_attn | torch)
    position_ids: Optional[torch.Tensor] = None  # int64 [T]: true positions within each sequence
    rope: Optional[dict] = None  # modernbert: {theta: (cos, sin) fp32 [T, 1, head_dim]}
    # rows were removed (late insertion's visible stream, token dropping's kept rows): row offsets are
    # not position offsets, so a local window must be taken over position_ids (kernels positions=)
    gapped: bool = False

    def select(self, rows: torch.Tensor) -> "Stream":
        """The same stream restricted to rows int64 [T'] (token dropping's kept rows)."""
        pos = None if self.position_ids is None else self.position_ids.index_select(0, rows)
        rope = None if self.rope is None else {t: (c.index_select(0, rows), s.index_select(0, rows))
                                               for t, (c, s) in self.rope.items()}
        return Stream(self.backend, pos, rope, gapped=True)

    @property
    def window_positions(self) -> Optional[torch.Tensor]:
        """What a windowed layer passes as kernels.varlen_attention(positions=): the true positions on
        a gapped stream; None on a full one (consecutive positions: the row-offset window is the same)."""
        return self.position_ids if self.gapped else None


class Queries(NamedTuple):
    """Sparse last layer: only these rows go past attention."""

    index: torch.Tensor  # int64 [Tq], sorted, grouped by sequence
    cu_seqlens: torch.Tensor  # int32 [B+1]
    max_seqlen: int


class EncoderMLM(nn.Module):
    """Encoder + MLM head. `forward(batch)` -> dict(loss_sum, n_correct, num_predictions).

    Subclasses set `embeddings` (forward(input_ids [T], position_ids [T]) -> [T, D], `.tokens` the
    token nn.Embedding the decoder is tied to), `layers` (each called as
    layer(h, cu_seqlens, max_seqlen, stream, queries) -> [T or Tq, D]), `final_norm` and `head`
    (`transform(x)`; `loss_args()` = (dense weight, dense bias, norm weight, norm bias, eps) for
    the fused loss kernel; the decoder `bias` [V])."""

    preset = ""

    def __init__(self, cfg, vocab_size: int, backend: str = "auto"):
        super().__init__()
        self.cfg, self.vocab_size, self.backend = cfg, vocab_size, backend
        self.mask_token_id: Optional[int] = None  # set by the builder (late insertion needs it)
        self.insert_layer = 0

    def stream(self, position_ids: torch.Tensor, gapped: bool = False) -> Stream:
        """Per-stream layer context for position_ids int64 [T] (presets add their tables); gapped: rows
        were removed from the sequences (Stream.gapped)."""
        return Stream(self.backend, position_ids, gapped=gapped)

    def run_layers(self, h: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, stream: Stream,
                   layers, queries: Optional[Queries] = None, batch: Optional[UnpaddedBatch] = None) -> torch.Tensor:
        """The one layer loop: h [T, D] through `layers`; with `queries` the last layer computes
        only those rows -> [Tq, D]. With `batch` (training forward over all layers) Token Dropping's
        middle layers see only its kept rows (pretrain/model/token_drop.py)."""
        last = len(layers) - 1
        td = getattr(self, "token_drop", None) if batch is not None else None
        for i, layer in enumerate(layers):
            if td is not None and i != last and td.covers(i):
                h = td.layer(i, h, batch, lambda x, cu, mx, keep: layer(x, cu, mx, stream.select(keep), None))
            else:
                h = layer(h, cu_seqlens, max_seqlen, stream, queries if i == last else None)
        return h

    def encode(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
               position_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded encoder: input_ids/position_ids int64 [T], cu_seqlens int32 [B+1] -> [T, D]
        (after the final norm where the preset has one: HF's last_hidden_state). token_type_ids
        int64 [T] (sentence pairs; bert only, the presets with segment embeddings)."""
        if token_type_ids is not None:
            h = self.embeddings(input_ids, position_ids, token_type_ids)
        else:
            h = self.embeddings(input_ids, position_ids)
        return self.final_norm(self.run_layers(h, cu_seqlens, max_seqlen, self.stream(position_ids), self.layers))

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids + mask (1 = real) -> [B, L, D] (zeros at padding): unpad once, pad once."""
        B, L = input_ids.shape
        ids, idx, cu, max_len = kernels.unpad_input(input_ids.unsqueeze(-1), attention_mask, backend=self.backend)
        pos = (torch.cumsum(attention_mask, 1) - 1).clamp(min=0).flatten().index_select(0, idx)
        return kernels.pad_input(self.encode(ids.squeeze(-1), cu, max_len, pos), idx, B, L, backend=self.backend)

    def _encode_late(self, b: UnpaddedBatch) -> torch.Tensor:
        """Layers < insert_layer over the visible stream (true positions: RoPE and local windows), then
        the [MASK] rows scattered in -> [T, D]: exactly what the embedding layer outputs for [MASK] at
        each slot."""
        vis, ins = b.visible_index, b.insert_positions
        pos = b.position_ids.index_select(0, vis)
        h = self.embeddings(b.input_ids.index_select(0, vis), pos)
        h = self.run_layers(h, b.cu_seqlens_visible, b.max_seqlen_visible, self.stream(pos, gapped=True),
                            self.layers[:self.insert_layer])
        mask_rows = self.embeddings(torch.full_like(ins, self.mask_token_id), b.position_ids.index_select(0, ins))
        return kernels.insert_masks(h, vis, ins, mask_rows.to(h.dtype), b.num_tokens, backend=self.backend)

    def forward(self, b: UnpaddedBatch) -> dict:
        if self.insert_layer > 0 and b.visible_index is not None:
            h, layers = self._encode_late(b), self.layers[self.insert_layer:]
        else:
            h, layers = self.embeddings(b.input_ids, b.position_ids), self.layers
        sparse = self.cfg.sparse_prediction
        queries = Queries(b.mlm_positions, b.mlm_cu_seqlens, b.max_mlm_seqlen) if sparse == "last_layer" else None
        late = layers is not self.layers
        h = self.final_norm(self.run_layers(h, b.cu_seqlens, b.max_seqlen, self.stream(b.position_ids), layers,
                                            queries, None if late else b))
        positions = b.mlm_positions
        if queries is not None:  # h already holds only the predicted rows
            positions = torch.arange(h.shape[0], device=h.device)
        if getattr(self, "token_drop", None) is not None:  # the importance EMA learns from this step's losses
            self.token_drop.observe(self.mlm_logits, h.index_select(0, positions), b.mlm_labels, b.step)
        return self.mlm_loss(h, positions, b.mlm_labels, dense=sparse == "none")

    def mlm_loss(self, h: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor, dense: bool = False) -> dict:
        """h [T, D], positions/labels int64 [M] -> summed loss, correct count, real M."""
        if dense:  # feature-ablation path: head over every token, then pick the predicted rows
            logits = self.mlm_logits(h).float()[positions]
            loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
            n_correct = ((logits.argmax(-1) == labels) & (labels != -100)).sum()
        else:
            w, bias, ln_w, ln_b, eps = self.head.loss_args()
            loss, n_correct = kernels.masked_token_loss(h, positions, labels, w, bias, ln_w, ln_b,
                                                        self.embeddings.tokens.weight, self.head.bias, eps,
                                                        backend=self.backend)
        return {"loss_sum": loss, "n_correct": n_correct, "num_predictions": (labels != -100).sum()}

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, V] logits (evaluation / fill-mask; training never materialises these)."""
        return F.linear(self.head.transform(h), self.embeddings.tokens.weight, self.head.bias)
