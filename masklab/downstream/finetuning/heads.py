"""Sequence classification / regression on our unpadded encoder (GLUE now, detection later).

`SequenceClassifier(encoder, num_labels)` computes what transformers'
`AutoModelForSequenceClassification` computes for the same weights, without padding:
- bert: h[CLS] -> pooler (tanh(dense)) -> dropout -> linear  (BertForSequenceClassification);
- modernbert: h[CLS] (after the final norm) -> head (norm(GELU(dense))) -> dropout -> linear
  (ModernBertForSequenceClassification, classifier_pooling="cls"; the head's weights are the MLM
  checkpoint's `head.dense` / `head.norm`, which HF loads into the classifier's head too).
- pooling="mean" (detection, as `embed` for sentence-transformers models): the mean of each
  sequence's final hidden states (specials included) -> dropout -> linear; no pooler / head transform.
num_labels == 1 is regression (STS-B): MSE on the single logit, as HF's problem_type="regression".
The MLM decoder bias is dropped (nothing here uses it); the encoder keeps its own kernels backend.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class SequenceClassifier(nn.Module):
    """forward(input_ids [T], cu_seqlens int32 [B+1], max_seqlen, position_ids [T], token_type_ids [T]|None)
    -> logits float [B, num_labels]."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: Optional[float] = None, pooling: str = "cls"):
        super().__init__()
        cfg = encoder.cfg
        self.preset, self.num_labels, self.pooling = encoder.preset, int(num_labels), pooling
        d, std = int(cfg.hidden_size), float(cfg.initializer_range)
        self.encoder = encoder
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be cls or mean, not '{pooling}'")
        if pooling == "mean":
            self.pool = None
            encoder.head = None
            if getattr(encoder, "pooler", None) is not None:
                encoder.pooler = None  # unused by mean pooling: no weights that never train
        elif self.preset == "bert":
            from masklab.pretrain.model.bert import BertPooler

            if encoder.pooler is None:  # the source had none: HF initialises it too (normal(0, std), zero bias)
                encoder.pooler = BertPooler(cfg)
                nn.init.normal_(encoder.pooler.dense.weight, 0.0, std), nn.init.zeros_(encoder.pooler.dense.bias)
            encoder.pooler.requires_grad_(True)  # frozen for MLM training (no gradient reaches it); trained here
            self.pool = None  # encoder.pooler (kept there: one state-dict key per tensor)
            encoder.head = None  # the MLM head is not part of a sequence classifier
        elif self.preset == "modernbert":
            self.pool = _ModernHead(encoder.head)
            encoder.head = None
        else:
            raise ValueError(f"no sequence-classification head for preset '{self.preset}'")
        p = float(cfg.hidden_dropout) if dropout is None else float(dropout)
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(d, self.num_labels)
        nn.init.normal_(self.classifier.weight, 0.0, std), nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                position_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        tt = token_type_ids if self.preset == "bert" else None  # modernbert has no segment embeddings
        h = self.encoder.encode(input_ids, cu_seqlens, max_seqlen, position_ids, tt)  # [T, D]
        if self.pooling == "mean":
            lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # [B]
            seg = torch.repeat_interleave(torch.arange(len(lens), device=h.device), lens)  # [T]
            pooled = h.new_zeros(len(lens), h.shape[1]).index_add_(0, seg, h) / lens.unsqueeze(1).to(h.dtype)
            return self.classifier(self.dropout(pooled)).float()
        cls = h.index_select(0, cu_seqlens[:-1].long())  # [B, D]: each sequence's first token
        pooled = self.encoder.pooler(cls) if self.pool is None else self.pool(cls)
        return self.classifier(self.dropout(pooled)).float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the batch: cross-entropy (int64 labels [B]) or MSE (float labels [B], num_labels 1)."""
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels.long())

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """Everything but the task's linear layer (what an MNLI-start carries to RTE / MRPC / STS-B)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("classifier.")}


class _ModernHead(nn.Module):
    """ModernBertPredictionHead over the pooled rows: norm(GELU(dense(x))) (the MLM head's transform)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.dense, self.norm = head.dense, head.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


def from_pretrained(path, num_labels: int, seed: int = 0, dropout: Optional[float] = None, pooling: str = "cls"):
    """MODEL (a MaskLab checkpoint / run dir, or an HF BERT / ModernBERT dir imported into our model)
    -> (SequenceClassifier in train mode, tokenizers.Tokenizer, MaskLab config). The new weights
    (classifier, and a pooler the source lacks) come from torch.manual_seed(seed)."""
    from masklab.downstream.encoders.load import detect_kind
    from masklab.pretrain.hf.convert import import_hf, load_pretrained

    if detect_kind(path) == "masklab":
        encoder, tok, cfg = load_pretrained(path)
    else:
        encoder, tok, cfg = import_hf(path)
    torch.manual_seed(int(seed))
    model = SequenceClassifier(encoder, num_labels, dropout, pooling)
    return model.train(), tok, cfg
