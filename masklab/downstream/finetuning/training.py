"""Detection fine-tuning on the shared engine (`engine.fit`: unpadded length-grouped batches, AdamW
with warmup then linear decay, a progress bar with step and ETA, a checkpoint per epoch, exact
resume) and scoring. Model selection: the epoch with the lowest validation loss (BCE of the
log-odds), early stopping after `patience` epochs without improvement. Scores are log-odds:
logit[1] - logit[0], float64.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from masklab.downstream.finetuning.model import FinetuneConfig

MAX_TOKENS = 8192  # real tokens per scoring batch (engine.predict): bounded memory whatever the lengths


def device_of(cfg: FinetuneConfig) -> str:
    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def settings(cfg: FinetuneConfig, progress: bool = True):
    """The engine's Settings for a detection run (torch AdamW's betas / eps, as before the engine)."""
    from masklab.downstream.finetuning.engine import Settings

    return Settings(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, warmup_ratio=cfg.warmup_ratio,
                    weight_decay=cfg.weight_decay, max_length=int(cfg.max_length), seed=cfg.seed,
                    max_steps=cfg.max_steps, betas=(0.9, 0.999), eps=1e-8, progress=progress, device=device_of(cfg))


def _encode(tok, texts: Sequence[str], max_length: int, labels=None):
    from masklab.downstream.finetuning.batches import encode

    y = np.zeros(len(texts), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return encode(tok, list(texts), None, y, max_length)


def windows(tok, texts: Sequence[str], max_length: int, overlap: int):
    """Every text as windows of <= max_length tokens ([CLS] body [SEP]), each body starting
    `max_length - 2 - overlap` tokens after the previous one, the last reaching the text's end
    (transformers' return_overflowing_tokens with stride=overlap).
    -> (batches.Encoded of the windows, owning text index int64 [W])."""
    from tokenizers import Tokenizer

    from masklab.downstream.finetuning.batches import Encoded, special_ids

    t = Tokenizer.from_str(tok.to_str())
    t.no_padding(), t.no_truncation()
    cls_id, sep_id = special_ids(t)
    body = max(max_length - 2, 1)
    step = max(body - overlap, 1)
    ids, owner = [], []
    for i, e in enumerate(t.encode_batch(list(texts), add_special_tokens=False)):
        x, s = e.ids, 0
        while True:
            ids.append(np.asarray([cls_id, *x[s:s + body], sep_id], dtype=np.int32)), owner.append(i)
            if s + body >= len(x):
                break
            s += step
    return Encoded(ids, [np.zeros(len(w), dtype=np.int32) for w in ids], np.zeros(len(ids), dtype=np.int64)), \
        np.asarray(owner, dtype=np.int64)


@torch.no_grad()
def predict_logodds(model, tok, texts: Sequence[str], cfg: FinetuneConfig) -> np.ndarray:
    """N texts -> float64 [N] log-odds of class 1: of the first max_length tokens, or with
    cfg.long == "chunk" the max over overlapping windows covering the whole text."""
    from masklab.downstream.finetuning.engine import predict

    device = str(next(model.parameters()).device)
    if cfg.long == "chunk":
        overlap = cfg.chunk_stride if cfg.chunk_stride is not None else cfg.max_length // 4
        enc, owner = windows(tok, texts, cfg.max_length, min(overlap, cfg.max_length - 3))
        lg = predict(model, enc, MAX_TOKENS, device).double()
        out = np.full(len(texts), -np.inf)
        np.maximum.at(out, owner, (lg[:, 1] - lg[:, 0]).numpy())
        return out
    lg = predict(model, _encode(tok, texts, cfg.max_length), MAX_TOKENS, device).double()
    return (lg[:, 1] - lg[:, 0]).numpy()


def _eval_loss(model, tok, texts, y, cfg) -> float:
    s = torch.from_numpy(predict_logodds(model, tok, texts, cfg))
    return float(F.binary_cross_entropy_with_logits(s, torch.from_numpy(np.asarray(y)).double()))


def train(model, tok, texts: Sequence[str], y: np.ndarray, val_texts: Sequence[str], val_y: np.ndarray,
          cfg: FinetuneConfig, workdir: Path, progress: bool = True) -> list[dict]:
    """Fine-tune in place on the engine (resuming from `workdir` when it holds a checkpoint); the
    weights with the best validation loss are the model's at the end.
    -> history: one dict per epoch (epoch, step, train_loss, val_loss, seconds)."""
    from masklab.downstream.finetuning.engine import Select, fit

    data = _encode(tok, texts, cfg.max_length, y)

    def evaluate() -> dict:
        return {"val_loss": _eval_loss(model, tok, val_texts, val_y, cfg) if len(val_texts) else math.nan}

    state = fit(model, data, settings(cfg, progress), workdir, evaluate, desc="finetune",
                select=Select("val_loss", cfg.patience))
    return state["history"]
