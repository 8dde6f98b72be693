"""`bert` preset: post-LN, learned absolute positions, GELU MLP; maps 1:1 onto BertForMaskedLM.

Runs unpadded end to end: hidden states are [T, D] for the packed tokens of a batch; the
encoder never re-pads. Kernels are reached only through `kernels` (one dispatch point).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels
from masklab.pretrain.batch import UnpaddedBatch


class BertEmbeddings(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """input_ids, position_ids: int64 [T] -> [T, D]. Token type is always 0 (single segments)."""
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, d // cfg.num_heads
        self.Wqkv = nn.Linear(d, 3 * d)  # fused q, k, v: one GEMM; split on HF export
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp_in = nn.Linear(d, cfg.intermediate_size)
        self.mlp_out = nn.Linear(cfg.intermediate_size, d)
        self.mlp_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                q_index: Optional[torch.Tensor] = None, cu_seqlens_q: Optional[torch.Tensor] = None,
                max_seqlen_q: int = 0) -> torch.Tensor:
        """h: [T, D]. With q_index [Tq] (sorted, grouped by sequence per cu_seqlens_q), only those
        rows are computed past attention (sparse last layer): returns [Tq, D]; else [T, D]."""
        T, D = h.shape
        qkv = self.Wqkv(h).view(T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)
        residual = h
        if q_index is not None:
            q = kernels.gather_rows(q, q_index)
            residual = kernels.gather_rows(h, q_index)
        else:
            cu_seqlens_q, max_seqlen_q = cu_seqlens, max_seqlen
        a = kernels.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens, max_seqlen_q, max_seqlen)
        x = self.attn_norm(residual + self.dropout(self.attn_out(a.reshape(-1, D))))
        return self.mlp_norm(x + self.dropout(self.mlp_out(F.gelu(self.mlp_in(x)))))


class BertMLMHead(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # decoder weight is tied to word embeddings


class BertMLM(nn.Module):
    """Encoder + MLM head. `forward(batch)` -> dict(loss_sum, n_correct, num_predictions)."""

    preset = "bert"

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embeddings = BertEmbeddings(cfg, vocab_size)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.head = BertMLMHead(cfg, vocab_size)
        self.mask_token_id: Optional[int] = None  # set by the builder (late insertion needs it)
        self.insert_layer = 0
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight), nn.init.zeros_(m.bias)

    def encode(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
               position_ids: torch.Tensor) -> torch.Tensor:
        """Unpadded encoder: input_ids/position_ids int64 [T], cu_seqlens int32 [B+1] -> [T, D]."""
        h = self.embeddings(input_ids, position_ids)
        for layer in self.layers:
            h = layer(h, cu_seqlens, max_seqlen)
        return h

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids + mask (1 = real) -> [B, L, D] (zeros at padding): unpad once, pad once."""
        B, L = input_ids.shape
        ids, idx, cu, max_len = kernels.unpad_input(input_ids.unsqueeze(-1), attention_mask)
        pos = (torch.cumsum(attention_mask, 1) - 1).clamp(min=0).flatten().index_select(0, idx)
        h = self.encode(ids.squeeze(-1), cu, max_len, pos)
        return kernels.pad_input(h, idx, B, L)

    def _encode_late(self, b: UnpaddedBatch) -> torch.Tensor:
        k = self.insert_layer
        vis = b.visible_index
        h = self.embeddings(b.input_ids.index_select(0, vis), b.position_ids.index_select(0, vis))
        for layer in self.layers[:k]:
            h = layer(h, b.cu_seqlens_visible, b.max_seqlen_visible)
        # exactly what the embedding layer outputs for [MASK] at each inserted slot
        mask_ids = torch.full_like(b.insert_positions, self.mask_token_id)
        mask_rows = self.embeddings(mask_ids, b.position_ids.index_select(0, b.insert_positions))
        return kernels.insert_masks(h, vis, b.insert_positions, mask_rows.to(h.dtype), b.num_tokens)

    def forward(self, b: UnpaddedBatch) -> dict:
        late = self.insert_layer > 0 and b.visible_index is not None
        if late:
            h = self._encode_late(b)
            layers = self.layers[self.insert_layer:]
        else:
            h = self.embeddings(b.input_ids, b.position_ids)
            layers = self.layers
        sparse = self.cfg.sparse_prediction
        last = len(layers) - 1
        td = getattr(self, "token_drop", None)
        for i, layer in enumerate(layers):
            if i == last and sparse == "last_layer":
                h = layer(h, b.cu_seqlens, b.max_seqlen, b.mlm_positions, b.mlm_cu_seqlens, b.max_mlm_seqlen)
            elif td is not None and td.covers(i):  # Token Dropping: the middle layers see the kept rows only
                h = td.layer(i, h, b, lambda x, cu, mx, keep: layer(x, cu, mx))
            else:
                h = layer(h, b.cu_seqlens, b.max_seqlen)
        positions = b.mlm_positions
        if sparse == "last_layer":
            positions = torch.arange(h.shape[0], device=h.device)
        if td is not None:
            td.observe(self.mlm_logits, h.index_select(0, positions), b.mlm_labels, b.step)
        return self.mlm_loss(h, positions, b.mlm_labels, dense=sparse == "none")

    def mlm_loss(self, h: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor, dense: bool = False) -> dict:
        hd = self.head
        if dense:  # feature-ablation path: head over every token, then pick the predicted rows
            x = F.layer_norm(F.gelu(F.linear(h, hd.dense.weight, hd.dense.bias)), (h.shape[-1],),
                             hd.LayerNorm.weight, hd.LayerNorm.bias, hd.LayerNorm.eps)
            logits = F.linear(x, self.embeddings.word_embeddings.weight, hd.bias).float()[positions]
            loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
            n_correct = ((logits.argmax(-1) == labels) & (labels != -100)).sum()
        else:
            loss, n_correct = kernels.masked_token_loss(
                h, positions, labels, hd.dense.weight, hd.dense.bias, hd.LayerNorm.weight, hd.LayerNorm.bias,
                self.embeddings.word_embeddings.weight, hd.bias, hd.LayerNorm.eps)
        return {"loss_sum": loss, "n_correct": n_correct, "num_predictions": (labels != -100).sum()}

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, V] logits (evaluation / fill-mask; training never materialises these)."""
        hd = self.head
        x = F.layer_norm(F.gelu(F.linear(h, hd.dense.weight, hd.dense.bias)), (h.shape[-1],),
                         hd.LayerNorm.weight, hd.LayerNorm.bias, hd.LayerNorm.eps)
        return F.linear(x, self.embeddings.word_embeddings.weight, hd.bias)
