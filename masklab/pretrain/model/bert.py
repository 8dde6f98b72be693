"""`bert` preset: post-LN, learned absolute positions, GELU MLP; maps 1:1 onto BertForMaskedLM.

Only what differs from modernbert lives here (embeddings, the layer, the head, the optional
pooler); the layer loop, late insertion, sparse prediction and losses are `encoder.EncoderMLM`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels
from masklab.pretrain.model.encoder import EncoderMLM, Queries, Stream


class BertEmbeddings(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    @property
    def tokens(self) -> nn.Embedding:
        return self.word_embeddings

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids, position_ids (and token_type_ids): int64 [T] -> [T, D]. Without token types every
        token is segment 0 (pretraining's single segments); sentence pairs pass 0/1 per token."""
        types = (self.token_type_embeddings.weight[0] if token_type_ids is None
                 else self.token_type_embeddings(token_type_ids))
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + types
        return self.dropout(self.LayerNorm(x))


class BertLayer(nn.Module):
    """Post-LN block: norm(x + attn(x)), then norm(x + MLP(x))."""

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

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, stream: Optional[Stream] = None,
                queries: Optional[Queries] = None) -> torch.Tensor:
        """h: [T, D] -> [T, D]; with `queries` only those rows are computed past attention -> [Tq, D]."""
        backend = (stream or Stream()).backend
        T, D = h.shape
        q, k, v = self.Wqkv(h).view(T, 3, self.num_heads, self.head_dim).unbind(1)
        residual, cu_q, max_q = h, cu_seqlens, max_seqlen
        if queries is not None:
            q = kernels.gather_rows(q, queries.index, backend=backend)
            residual = kernels.gather_rows(h, queries.index, backend=backend)
            cu_q, max_q = queries.cu_seqlens, queries.max_seqlen
        a = kernels.varlen_attention(q, k, v, cu_q, cu_seqlens, max_q, max_seqlen, backend=backend)
        x = self.attn_norm(residual + self.dropout(self.attn_out(a.reshape(-1, D))))
        return self.mlp_norm(x + self.dropout(self.mlp_out(F.gelu(self.mlp_in(x)))))


class BertMLMHead(nn.Module):
    """HF's BertPredictionHeadTransform + the decoder bias; the decoder weight is the word embeddings."""

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, D]: LayerNorm(GELU(dense(x)))."""
        return F.layer_norm(F.gelu(F.linear(x, self.dense.weight, self.dense.bias)), (x.shape[-1],),
                            self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps)

    def loss_args(self) -> tuple:
        return self.dense.weight, self.dense.bias, self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps


class BertPooler(nn.Module):
    """HF's BertPooler: tanh(dense(h[CLS])). Carried for a lossless HF round trip (sequence
    classifiers start from it); the MLM loss never reaches it, so it is frozen."""

    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.requires_grad_(False)  # no gradient ever reaches it: keep DDP / the optimizer off it

    def forward(self, cls_rows: torch.Tensor) -> torch.Tensor:
        """[B, D] (each sequence's first token) -> [B, D]."""
        return torch.tanh(self.dense(cls_rows))


class BertMLM(EncoderMLM):
    preset = "bert"

    def __init__(self, cfg, vocab_size: int, backend: str = "auto"):
        super().__init__(cfg, vocab_size, backend)
        self.embeddings = BertEmbeddings(cfg, vocab_size)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.Identity()  # post-LN: each layer ends normed
        self.head = BertMLMHead(cfg, vocab_size)
        self.pooler = BertPooler(cfg) if cfg.pooler else None
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
