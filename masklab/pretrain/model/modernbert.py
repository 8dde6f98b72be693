"""`modernbert` preset: pre-LN, rotary positions, GeGLU MLP, no biases, alternating local/global
attention, final norm; maps 1:1 onto transformers' ModernBertForMaskedLM (module names below
follow HF's so the weight mapping in pretrain/hf/modernbert.py stays a rename).

- Layer i attends globally iff i % global_attn_every == 0 (HF's `layer_types` rule), else within
  a sliding window over TRUE positions: the token at position p_i sees the token at p_j (same
  sequence) iff |p_i - p_j| <= local_window // 2. That is HF's `sliding_window = local_attention // 2`
  (masking_utils: `abs(q - kv) <= sliding_window`). On the full stream positions are consecutive and
  kernels.varlen_attention(window=local_window) computes it from row offsets; on a stream with rows
  removed (late-mask insertion: layers < insert_layer run on the visible tokens only; Token
  Dropping's kept rows) row offsets undercount distances, so the layer passes the true positions
  (`positions=`, Stream.window_positions) and a local layer still spans local_window // 2 real
  positions each side, however many [MASK] slots lie between (checkpoints trained before this
  windowed rows instead: resume refuses them, pretrain/loop/resume.py `model.local_window_over`).
- RoPE: rope_theta on global layers, local_rope_theta on local ones, applied on the unpadded
  stream from position_ids, in fp32 like HF's apply_rotary_pos_emb (bf16 rotation loses bits).
- No position embeddings: late-mask insertion inserts norm(tok_embeddings[MASK]) (what the
  embedding layer outputs for [MASK]); the position enters later, through RoPE.
Only what differs from bert lives here (embeddings, the pre-LN layer, RoPE tables, final norm,
head); the layer loop, late insertion, sparse prediction and losses are `encoder.EncoderMLM`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels
from masklab.errors import ConfigError
from masklab.pretrain.model.encoder import EncoderMLM, Queries, Stream

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

    @property
    def tokens(self) -> nn.Embedding:
        return self.tok_embeddings

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

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, stream: Stream,
                queries: Optional[Queries] = None) -> torch.Tensor:
        """h [T, D] -> [T, D]; with `queries` only those rows go past attention -> [Tq, D].
        `stream.rope` holds this stream's RoPE tables (ModernBertMLM.stream)."""
        T, D = h.shape
        cos, sin = stream.rope[self.theta]
        q, k, v = self.Wqkv(self.attn_norm(h)).view(T, 3, self.num_heads, self.head_dim).unbind(1)
        k = apply_rope(k, cos, sin)
        residual, cu_q, max_q = h, cu_seqlens, max_seqlen
        if queries is not None:
            if self.window is not None:  # window offsets are query-row relative: needs all rows
                raise ValueError("sparse last-layer prediction needs a global last layer")
            q = kernels.gather_rows(q, queries.index, backend=stream.backend)
            residual = kernels.gather_rows(h, queries.index, backend=stream.backend)
            cos, sin = cos.index_select(0, queries.index), sin.index_select(0, queries.index)
            cu_q, max_q = queries.cu_seqlens, queries.max_seqlen
        q = apply_rope(q, cos, sin)
        a = kernels.varlen_attention(q, k, v, cu_q, cu_seqlens, max_q, max_seqlen, window=self.window,
                                     positions=stream.window_positions if self.window is not None else None,
                                     backend=stream.backend)
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

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, D]: norm(GELU(dense(x)))."""
        return self.norm(F.gelu(self.dense(x)))

    def loss_args(self) -> tuple:
        return self.dense.weight, None, self.norm.weight, None, self.norm.eps


class ModernBertMLM(EncoderMLM):
    preset = "modernbert"

    def __init__(self, cfg, vocab_size: int, backend: str = "auto"):
        super().__init__(cfg, vocab_size, backend)
        head_dim = cfg.hidden_size // cfg.num_heads
        if head_dim % 2:
            raise ConfigError(f"modernbert: head dim {head_dim} (model.hidden_size / model.num_heads) must be even "
                              "for rotary embeddings")
        if cfg.local_window < 0 or cfg.global_attn_every < 1:
            raise ConfigError("modernbert: model.local_window must be >= 0 and model.global_attn_every >= 1")
        self.head_dim = head_dim
        self.embeddings = ModernBertEmbeddings(cfg, vocab_size)
        self.layers = nn.ModuleList(ModernBertLayer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = _ln(cfg.hidden_size, cfg.layer_norm_eps)
        self.head = ModernBertHead(cfg, vocab_size)
        self._thetas = sorted({layer.theta for layer in self.layers})
        self._init_like_hf(cfg)

    def stream(self, position_ids: torch.Tensor, gapped: bool = False) -> Stream:
        """RoPE tables from the stream's true positions, once per forward (not per layer)."""
        return Stream(self.backend, position_ids, rope_tables(position_ids, self.head_dim, self._thetas), gapped)

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
