"""`modernbert` preset: pre-LN, rotary positions, GeGLU MLP, no biases, alternating local/global
attention, final norm; maps 1:1 onto transformers' ModernBertForMaskedLM (module names below
follow HF's so the weight mapping in pretrain/hf_modernbert.py stays a rename).

- Layer i attends globally iff i % global_attn_every == 0 (HF's `layer_types` rule), else within
  a sliding window: query i sees key j iff |i - j| <= local_window // 2. That is HF's
  `sliding_window = local_attention // 2` (masking_utils: `abs(q - kv) <= sliding_window`), and
  what kernels.varlen_attention(window=local_window) computes.
- RoPE: rope_theta on global layers, local_rope_theta on local ones, applied on the unpadded
  stream from position_ids, in fp32 like HF's apply_rotary_pos_emb (bf16 rotation loses bits).
- No position embeddings: late-mask insertion inserts norm(tok_embeddings[MASK]) (what the
  embedding layer outputs for [MASK]); the position enters later, through RoPE.
- Runs unpadded end to end: hidden states are [T, D]; the encoder never re-pads.
Same interface as the bert preset (encode / forward / forward_padded / mlm_logits / mlm_loss).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels
from masklab.errors import ConfigError
from masklab.pretrain.batch import UnpaddedBatch

RopeTables = dict  # theta -> (cos, sin), each fp32 [T, 1, head_dim]


def _ln(d: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(d, eps=eps, bias=False)  # HF norm_bias=False


def rope_tables(position_ids: torch.Tensor, head_dim: int, thetas) -> RopeTables:
    """position_ids int64 [T] -> {theta: (cos, sin) fp32 [T, 1, head_dim]}, computed once per
    forward (not per layer). Frequencies exactly as HF's compute_default_rope_parameters."""
    out = {}
    for theta in thetas:
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device)
                               / head_dim))
        ang = position_ids.float()[:, None] * inv[None, :]
        emb = torch.cat([ang, ang], -1)[:, None, :]
        out[theta] = (emb.cos(), emb.sin())
    return out


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, d] rotated by cos/sin [T, 1, d] (HF's rotate_half convention), computed in fp32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, -1)
    return (xf * cos + torch.cat([-x2, x1], -1) * sin).to(x.dtype)


class ModernBertEmbeddings(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab_size, cfg.hidden_size)
        self.norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """int64 [T] -> [T, D]. position_ids is accepted (bert's signature) and unused: positions
        enter through RoPE in attention."""
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertLayer(nn.Module):
    """Pre-LN block: x + Wo(attn(attn_norm(x))), then x + Wo_mlp(GeGLU(mlp_norm(x)))."""

    def __init__(self, cfg, index: int):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, d // cfg.num_heads
        self.is_global = index % cfg.global_attn_every == 0
        self.window = None if self.is_global else cfg.local_window
        self.theta = float(cfg.rope_theta if self.is_global else cfg.local_rope_theta)
        self.attn_norm = nn.Identity() if index == 0 else _ln(d, cfg.layer_norm_eps)  # embeddings are normed (HF)
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.Wo = nn.Linear(d, d, bias=False)
        self.mlp_norm = _ln(d, cfg.layer_norm_eps)
        self.Wi = nn.Linear(d, 2 * cfg.intermediate_size, bias=False)  # [input | gate], HF's chunk order
        self.Wo_mlp = nn.Linear(cfg.intermediate_size, d, bias=False)
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, rope: RopeTables,
                q_index: Optional[torch.Tensor] = None, cu_seqlens_q: Optional[torch.Tensor] = None,
                max_seqlen_q: int = 0) -> torch.Tensor:
        """h [T, D] -> [T, D]; with q_index [Tq] (sorted, grouped per cu_seqlens_q) only those rows
        go past attention (sparse last layer) -> [Tq, D]."""
        T, D = h.shape
        cos, sin = rope[self.theta]
        q, k, v = self.Wqkv(self.attn_norm(h)).view(T, 3, self.num_heads, self.head_dim).unbind(1)
        k = apply_rope(k, cos, sin)
        residual = h
        if q_index is not None:
            if self.window is not None:  # window offsets are query-row relative: needs all rows
                raise ValueError("sparse last-layer prediction needs a global last layer")
            q, residual = kernels.gather_rows(q, q_index), kernels.gather_rows(h, q_index)
            cos, sin = cos.index_select(0, q_index), sin.index_select(0, q_index)
        else:
            cu_seqlens_q, max_seqlen_q = cu_seqlens, max_seqlen
        q = apply_rope(q, cos, sin)
        a = kernels.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens, max_seqlen_q, max_seqlen, window=self.window)
        # HF: out_drop(Wo(attn)); its attention_dropout on the probabilities has no counterpart here
        x = residual + self.drop(self.Wo(a.reshape(-1, D)))
        inp, gate = self.Wi(self.mlp_norm(x)).chunk(2, -1)
        return x + self.Wo_mlp(self.drop(F.gelu(inp) * gate))  # HF: Wo(drop(act(input) * gate))


class ModernBertHead(nn.Module):
    """HF's ModernBertPredictionHead (dense no bias, GELU, LayerNorm no bias) + the decoder bias;
    the decoder weight is tied to tok_embeddings."""

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))


class ModernBertMLM(nn.Module):
    """Encoder + MLM head. `forward(batch)` -> dict(loss_sum, n_correct, num_predictions)."""

    preset = "modernbert"

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        head_dim = cfg.hidden_size // cfg.num_heads
        if head_dim % 2:
            raise ConfigError(f"modernbert: head dim {head_dim} (model.hidden_size / model.num_heads) must be even "
                              "for rotary embeddings")
        if cfg.local_window < 0 or cfg.global_attn_every < 1:
            raise ConfigError("modernbert: model.local_window must be >= 0 and model.global_attn_every >= 1")
        self.cfg, self.vocab_size, self.head_dim = cfg, vocab_size, head_dim
        self.embeddings = ModernBertEmbeddings(cfg, vocab_size)
        self.layers = nn.ModuleList(ModernBertLayer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.head = ModernBertHead(cfg, vocab_size)
        self.mask_token_id: Optional[int] = None  # set by the builder (late insertion needs it)
        self.insert_layer = 0
        self._thetas = sorted({layer.theta for layer in self.layers})
        self._init_like_hf(cfg)

    def _init_like_hf(self, cfg) -> None:
        """HF ModernBertPreTrainedModel._init_weights: truncated normal (cutoff 2 std); residual
        output projections and the head's dense scaled by 1/sqrt(2 * num_layers)."""
        std_in = cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_layers)

        def tn(w: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)

        tn(self.embeddings.tok_embeddings.weight, std_in)
        for layer in self.layers:
            tn(layer.Wqkv.weight, std_in), tn(layer.Wi.weight, std_in)
            tn(layer.Wo.weight, std_out), tn(layer.Wo_mlp.weight, std_out)
        tn(self.head.dense.weight, std_out)

    def _run(self, h: torch.Tensor, layers, cu: torch.Tensor, max_len: int, pos: torch.Tensor,
             b: Optional[UnpaddedBatch] = None) -> torch.Tensor:
        """Layers + final norm over h [T, D]; with a batch in last_layer mode the last layer
        computes only b.mlm_positions -> [M, D]."""
        rope = rope_tables(pos, self.head_dim, self._thetas)
        last = len(layers) - 1
        td = getattr(self, "token_drop", None) if b is not None else None
        for i, layer in enumerate(layers):
            if b is not None and i == last and self.cfg.sparse_prediction == "last_layer":
                h = layer(h, cu, max_len, rope, b.mlm_positions, b.mlm_cu_seqlens, b.max_mlm_seqlen)
            elif td is not None and td.covers(i):  # Token Dropping: kept rows only, their own rotary rows
                h = td.layer(i, h, b, lambda x, c, mx, keep: layer(x, c, mx, {t: (cs[keep], sn[keep])
                                                                            for t, (cs, sn) in rope.items()}))
            else:
                h = layer(h, cu, max_len, rope)
        return self.final_norm(h)

    def encode(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
               position_ids: torch.Tensor) -> torch.Tensor:
        """Unpadded encoder: input_ids/position_ids int64 [T], cu_seqlens int32 [B+1] -> [T, D]
        (after the final norm: HF's last_hidden_state)."""
        return self._run(self.embeddings(input_ids), self.layers, cu_seqlens, max_seqlen, position_ids)

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids + mask (1 = real) -> [B, L, D] (zeros at padding): unpad once, pad once."""
        B, L = input_ids.shape
        ids, idx, cu, max_len = kernels.unpad_input(input_ids.unsqueeze(-1), attention_mask)
        pos = (torch.cumsum(attention_mask, 1) - 1).clamp(min=0).flatten().index_select(0, idx)
        return kernels.pad_input(self.encode(ids.squeeze(-1), cu, max_len, pos), idx, B, L)

    def _encode_late(self, b: UnpaddedBatch) -> torch.Tensor:
        """Layers < insert_layer over the visible stream, then [MASK] rows scattered in -> [T, D]."""
        vis, k = b.visible_index, self.insert_layer
        h = self.embeddings(b.input_ids.index_select(0, vis))
        rope = rope_tables(b.position_ids.index_select(0, vis), self.head_dim, self._thetas)
        for layer in self.layers[:k]:
            h = layer(h, b.cu_seqlens_visible, b.max_seqlen_visible, rope)
        # exactly what the embedding layer outputs for [MASK] (no position embedding to add)
        mask_rows = self.embeddings(torch.full_like(b.insert_positions, self.mask_token_id))
        return kernels.insert_masks(h, vis, b.insert_positions, mask_rows.to(h.dtype), b.num_tokens)

    def forward(self, b: UnpaddedBatch) -> dict:
        if self.insert_layer > 0 and b.visible_index is not None:
            h, layers = self._encode_late(b), self.layers[self.insert_layer:]
        else:
            h, layers = self.embeddings(b.input_ids), self.layers
        h = self._run(h, layers, b.cu_seqlens, b.max_seqlen, b.position_ids, b)
        positions = b.mlm_positions
        if self.cfg.sparse_prediction == "last_layer":  # h already holds only the predicted rows
            positions = torch.arange(h.shape[0], device=h.device)
        if getattr(self, "token_drop", None) is not None:
            self.token_drop.observe(self.mlm_logits, h.index_select(0, positions), b.mlm_labels, b.step)
        return self.mlm_loss(h, positions, b.mlm_labels, dense=self.cfg.sparse_prediction == "none")

    def mlm_loss(self, h: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor, dense: bool = False) -> dict:
        """h [T, D], positions/labels int64 [M] -> summed loss, correct count, real M."""
        if dense:  # feature-ablation path: head over every token, then pick the predicted rows
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
        """[N, D] -> [N, V] logits (evaluation / fill-mask; training never materialises these)."""
        hd = self.head
        return F.linear(hd.norm(F.gelu(hd.dense(h))), self.embeddings.tok_embeddings.weight, hd.bias)
