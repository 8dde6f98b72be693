"""The fine-tuning loop and scoring: AdamW, linear warmup then decay, early stopping on validation
loss (best weights kept), bf16 autocast on CUDA, fp32 on CPU. Scores are log-odds:
logit[1] - logit[0]."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from masklab.downstream.finetuning.model import FinetuneConfig

log = logging.getLogger("masklab.downstream")


def _logits(model, batch) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out if isinstance(out, torch.Tensor) else out.logits


def _batches(tok, texts: Sequence[str], idx: np.ndarray, bs: int, max_length: int, device):
    for s in range(0, len(idx), bs):
        part = idx[s:s + bs]
        enc = tok([texts[i] for i in part], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        yield part, {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def _windows(tok, texts: Sequence[str], max_length: int, overlap: int) -> tuple[list[list[int]], np.ndarray]:
    """Every text as overlapping windows of <= max_length tokens (specials included), each
    starting `max_length - 2 - overlap` tokens after the previous one.
    -> (token ids per window, owning text index int64 [W])."""
    enc = tok(list(texts), truncation=True, max_length=max_length, stride=overlap, return_overflowing_tokens=True)
    return enc["input_ids"], np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)


@torch.no_grad()
def _score_windows(model, tok, ids: list[list[int]], bs: int, device) -> np.ndarray:
    out = np.zeros(len(ids))
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: less padding
    for s in range(0, len(order), bs):
        part = order[s:s + bs]
        enc = tok.pad({"input_ids": [ids[i] for i in part]}, return_tensors="pt")
        batch = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
        with _autocast(device):
            lg = _logits(model, batch).float()
        out[part] = (lg[:, 1] - lg[:, 0]).cpu().numpy()
    return out


@torch.no_grad()
def predict_logodds(model, tok, texts: Sequence[str], cfg: FinetuneConfig) -> np.ndarray:
    """N texts -> float64 [N] log-odds of class 1: of the first max_length tokens, or with
    cfg.long == "chunk" the max over overlapping windows covering the whole text."""
    model.eval()
    device = next(model.parameters()).device
    if cfg.long == "chunk":
        overlap = cfg.chunk_stride if cfg.chunk_stride is not None else cfg.max_length // 4
        ids, owner = _windows(tok, texts, cfg.max_length, min(overlap, cfg.max_length - 3))
        s = _score_windows(model, tok, ids, cfg.batch_size * 2, device)
        out = np.full(len(texts), -np.inf)
        np.maximum.at(out, owner, s)
        return out
    enc = tok(list(texts), truncation=True, max_length=cfg.max_length)
    return _score_windows(model, tok, enc["input_ids"], cfg.batch_size * 2, device)


def _eval_loss(model, tok, texts, y, cfg) -> float:
    s = torch.from_numpy(predict_logodds(model, tok, texts, cfg))
    return float(F.binary_cross_entropy_with_logits(s, torch.from_numpy(y).double()))


class _Progress:
    """Step and ETA across the whole run, updated every batch: a tqdm bar on a terminal, else a log
    line at most every `every_s` seconds (and at the last step) with epoch, step/total, loss, ETA."""

    def __init__(self, total: int, every_s: float = 30.0, tty: Optional[bool] = None):
        import sys
        import time

        self.total, self.every, self.step, self.t0, self.last = total, every_s, 0, time.time(), time.time()
        self.bar = None
        if sys.stderr.isatty() if tty is None else tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="finetune", unit="step", dynamic_ncols=True)

    def update(self, epoch: int, epochs: int, loss: float) -> None:
        import time

        from masklab.pretrain.loop.progress import _duration

        self.step += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"epoch {epoch + 1}/{epochs}, loss {loss:.4f}")
            return
        now = time.time()
        if now - self.last < self.every and self.step < self.total:
            return
        self.last = now
        eta = (now - self.t0) / self.step * (self.total - self.step) if self.step else float("nan")
        log.info("finetune epoch %d/%d, step %d/%d (%.0f%%): loss %.4f, %.2f s/step, eta %s", epoch + 1, epochs,
                 self.step, self.total, 100 * self.step / max(self.total, 1), loss,
                 (now - self.t0) / max(self.step, 1), _duration(eta))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(model, tok, texts: Sequence[str], y: np.ndarray, val_texts: Sequence[str], val_y: np.ndarray,
          cfg: FinetuneConfig, progress: bool = True) -> list[dict]:
    """Fine-tune in place; the weights with the best validation loss are restored at the end.
    -> history: one dict per epoch (train_loss, val_loss)."""
    from transformers import get_linear_schedule_with_warmup

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases, LayerNorm: no weight decay
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = (len(texts) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    g = torch.Generator().manual_seed(cfg.seed)
    labels = torch.as_tensor(y, dtype=torch.long)
    bar = _Progress(total) if progress else None
    try:
        history = _epochs(model, tok, texts, labels, val_texts, val_y, cfg, opt, sched, g, device, bar)
    finally:
        if bar is not None:
            bar.close()
    return history


def _epochs(model, tok, texts, labels, val_texts, val_y, cfg, opt, sched, g, device, bar) -> list[dict]:
    best, best_state, bad, step, history = float("inf"), None, 0, 0, []
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(texts), generator=g).numpy()
        losses = []
        for part, batch in _batches(tok, texts, perm, cfg.batch_size, cfg.max_length, device):
            with _autocast(device):
                loss = F.cross_entropy(_logits(model, batch).float(), labels[part].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if bar is not None:
                bar.update(epoch, cfg.epochs, float(np.mean(losses[-20:])))
            if cfg.max_steps and step >= cfg.max_steps:
                break
        val_loss = _eval_loss(model, tok, val_texts, val_y, cfg) if len(val_texts) else float("nan")
        history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        log.info("finetune epoch %d/%d done (step %d): train loss %.4f, val loss %.4f", epoch + 1, cfg.epochs, step,
                 history[-1]["train_loss"], val_loss)
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif len(val_texts):  # without validation data every epoch runs
            bad += 1
        if bad >= cfg.patience or (cfg.max_steps and step >= cfg.max_steps):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
