"""`modernbert` preset: pre-LN, rotary positions, GeGLU MLP, no biases, alternating local/global
attention; maps 1:1 onto transformers' ModernBertForMaskedLM.

Layer i attends globally iff i % global_attn_every == 0, else within a sliding window
(|i - j| <= local_window // 2, HF's `sliding_window = local_attention // 2`), through the
varlen kernel's `window`. RoPE uses rope_theta on global layers and local_rope_theta on local
ones, applied on the unpadded stream with position_ids. Same interface as the bert preset.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from pretrain.batch import UnpaddedBatch


def _ln(d: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(d, eps=eps, bias=False)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, H, d], pos int64 [T] -> rotated x (HF's rotate_half convention)."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = pos.float()[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], -1)
    cos, sin = emb.cos()[:, None, :].to(x.dtype), emb.sin()[:, None, :].to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class ModernBertEmbeddings(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab_size, cfg.hidden_size)
        self.norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """int64 [T] -> [T, D] (positions enter through RoPE in attention, not here)."""
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertLayer(nn.Module):
    def __init__(self, cfg, index: int):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, d // cfg.num_heads
        self.is_global = index % cfg.global_attn_every == 0
        self.window = None if self.is_global else cfg.local_window
        self.theta = cfg.rope_theta if self.is_global else cfg.local_rope_theta
        self.attn_norm = nn.Identity() if index == 0 else _ln(d, cfg.layer_norm_eps)  # embeddings are normed
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.Wo = nn.Linear(d, d, bias=False)
        self.mlp_norm = _ln(d, cfg.layer_norm_eps)
        self.Wi = nn.Linear(d, 2 * cfg.intermediate_size, bias=False)
        self.Wo_mlp = nn.Linear(cfg.intermediate_size, d, bias=False)
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, h, cu_seqlens, max_seqlen, position_ids, q_index=None, cu_seqlens_q=None, max_seqlen_q=0):
        """h [T, D] -> [T, D], or [Tq, D] for the rows q_index (sparse last layer)."""
        T, D = h.shape
        qkv = self.Wqkv(self.attn_norm(h)).view(T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(1)
        k = rope(k, position_ids, self.theta)
        residual, q_pos = h, position_ids
        if q_index is not None:
            q, residual = kernels.gather_rows(q, q_index), kernels.gather_rows(h, q_index)
            q_pos = position_ids.index_select(0, q_index)
        else:
            cu_seqlens_q, max_seqlen_q = cu_seqlens, max_seqlen
        q = rope(q, q_pos, self.theta)
        if self.window is not None and q_index is not None:
            raise ValueError("sparse last-layer prediction needs a global last layer")
        a = kernels.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens, max_seqlen_q, max_seqlen, window=self.window)
        x = residual + self.drop(self.Wo(a.reshape(-1, D)))
        gate_in, gate = self.Wi(self.mlp_norm(x)).chunk(2, -1)
        return x + self.drop(self.Wo_mlp(F.gelu(gate_in) * gate))


class ModernBertHead(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # decoder bias; weight tied to tok_embeddings


class ModernBertMLM(nn.Module):
    preset = "modernbert"

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embeddings = ModernBertEmbeddings(cfg, vocab_size)
        self.layers = nn.ModuleList(ModernBertLayer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.head = ModernBertHead(cfg, vocab_size)
        self.mask_token_id: Optional[int] = None
        self.insert_layer = 0
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=cfg.initializer_range, a=-2 * cfg.initializer_range,
                                      b=2 * cfg.initializer_range)

    def _run(self, h, layers, cu, max_len, pos, b: Optional[UnpaddedBatch] = None):
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            if b is not None and i == last and self.cfg.sparse_prediction == "last_layer":
                h = layer(h, cu, max_len, pos, b.mlm_positions, b.mlm_cu_seqlens, b.max_mlm_seqlen)
            else:
                h = layer(h, cu, max_len, pos)
        return self.final_norm(h)

    def encode(self, input_ids, cu_seqlens, max_seqlen, position_ids) -> torch.Tensor:
        """Unpadded encoder: int64 [T] ids/positions, int32 [B+1] cu_seqlens -> [T, D] (final norm)."""
        return self._run(self.embeddings(input_ids), self.layers, cu_seqlens, max_seqlen, position_ids)

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, L = input_ids.shape
        ids, idx, cu, max_len = kernels.unpad_input(input_ids.unsqueeze(-1), attention_mask)
        pos = (torch.cumsum(attention_mask, 1) - 1).clamp(min=0).flatten().index_select(0, idx)
        return kernels.pad_input(self.encode(ids.squeeze(-1), cu, max_len, pos), idx, B, L)

    def forward(self, b: UnpaddedBatch) -> dict:
        if self.insert_layer > 0 and b.visible_index is not None:
            vis, k = b.visible_index, self.insert_layer
            h = self.embeddings(b.input_ids.index_select(0, vis))
            pos_vis = b.position_ids.index_select(0, vis)
            for layer in self.layers[:k]:
                h = layer(h, b.cu_seqlens_visible, b.max_seqlen_visible, pos_vis)
            mask_rows = self.embeddings(torch.full_like(b.insert_positions, self.mask_token_id))
            h = kernels.insert_masks(h, vis, b.insert_positions, mask_rows.to(h.dtype), b.num_tokens)
            layers = self.layers[k:]
        else:
            h, layers = self.embeddings(b.input_ids), self.layers
        h = self._run(h, layers, b.cu_seqlens, b.max_seqlen, b.position_ids, b)
        positions = b.mlm_positions
        if self.cfg.sparse_prediction == "last_layer":
            positions = torch.arange(h.shape[0], device=h.device)
        return self.mlm_loss(h, positions, b.mlm_labels, dense=self.cfg.sparse_prediction == "none")

    def mlm_loss(self, h, positions, labels, dense: bool = False) -> dict:
        if dense:
            logits = self.mlm_logits(h).float()[positions]
            loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
            n_correct = ((logits.argmax(-1) == labels) & (labels != -100)).sum()
        else:
            hd = self.head
            loss, n_correct = kernels.masked_token_loss(h, positions, labels, hd.dense.weight, None, hd.norm.weight,
                                                        None, self.embeddings.tok_embeddings.weight, hd.bias,
                                                        hd.norm.eps)
        return {"loss_sum": loss, "n_correct": n_correct, "num_predictions": (labels != -100).sum()}

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        hd = self.head
        x = hd.norm(F.gelu(hd.dense(h)))
        return F.linear(x, self.embeddings.tok_embeddings.weight, hd.bias)
