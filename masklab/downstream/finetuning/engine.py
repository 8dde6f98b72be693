"""The fine-tuning engine: one loop for every task (GLUE and detection's `finetune`).

`fit(model, train, settings, workdir, evaluate)` trains a `heads.SequenceClassifier` on
`batches.Encoded` data: length-grouped unpadded batches, AdamW (no decay on biases and norms) with
linear warmup then linear decay to 0, gradient clipping at 1.0, a tqdm bar with step and ETA (log
lines every ~10% when stderr is not a TTY). Everything random is keyed by counters: the epoch's
batch order by (seed, epoch), dropout by (seed, step). So a run killed at any point and resumed
from its last checkpoint takes exactly the steps an unkilled run takes.

Checkpoints: `<workdir>/checkpoint/` (model.safetensors, optimizer.safetensors, state.json) written
through `masklab.atomic` at every epoch end (and every `save_every` steps), the previous one
replaced only once the new one is complete.

Model selection (detection): `fit(..., select=Select("val_loss", patience))` keeps the weights of the
epoch with the lowest `evaluate()[key]` (in the checkpoint too, best.safetensors), stops after
`patience` epochs without improvement and restores the best weights at the end.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from masklab.downstream.finetuning.batches import Encoded, collate, length_grouped

log = logging.getLogger("masklab.finetune")
CKPT = "checkpoint"


@dataclass
class Select:
    """Early stopping / model selection on an `evaluate()` key (lower is better; NaN never counts)."""
    key: str = "val_loss"
    patience: int = 2


@dataclass
class Settings:
    lr: float = 2e-5
    epochs: float = 3
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0
    max_steps: int = 0  # 0: epochs decide; > 0 caps the run (tests, smoke runs)
    save_every: int = 0  # 0: checkpoint at epoch ends only
    clip_norm: float = 1.0
    betas: tuple = (0.9, 0.98)  # MosaicBERT's GLUE optimizer (decoupled AdamW there; torch AdamW here)
    eps: float = 1e-6
    progress: bool = True
    device: str = "cpu"


def _seed(seed: int, step: int, purpose: int) -> int:
    """A 63-bit torch seed from counters (splitmix64): dropout of step s never depends on history."""
    import numpy as np

    from masklab.data_prep.splitmix64 import mix

    x = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + purpose) & (2**64 - 1)
    return int(mix(np.array([x], dtype=np.uint64))[0]) & (2**63 - 1)


def total_steps(n: int, s: Settings) -> tuple[int, int]:
    """(steps per epoch, total optimizer steps)."""
    per_epoch = math.ceil(n / s.batch_size)
    total = max(1, math.ceil(per_epoch * s.epochs))
    return per_epoch, min(total, s.max_steps) if s.max_steps > 0 else total


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total` (transformers' schedule)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def optimizer(model: torch.nn.Module, s: Settings) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)  # biases and norm weights: no decay (BERT recipe)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all tensors; on CPU ~7x faster than the foreach loop (a 30k x 384
    # embedding is updated in full every step), the same update
    return torch.optim.AdamW(groups, lr=s.lr, betas=tuple(s.betas), eps=s.eps, fused=True)


def fit(model, train: Encoded, s: Settings, workdir: Path, evaluate: Optional[Callable[[], dict]] = None,
        desc: str = "fine-tune", select: Optional[Select] = None) -> dict:
    """Train (resuming from `workdir/checkpoint` when there is one) -> the state: {step, epoch,
    history: [{epoch, step, loss, **evaluate()}], ...}. `evaluate` runs after every epoch; with
    `select`, the best epoch's weights are the model's at the end (state["best"])."""
    from masklab.downstream.finetuning.checkpoint import load, save

    workdir = Path(workdir)
    device = torch.device(s.device)
    model.to(device)
    opt = optimizer(model, s)
    per_epoch, total = total_steps(len(train), s)
    warmup = int(round(s.warmup_ratio * total))
    state = {"step": 0, "history": [], "settings": asdict(s), "total_steps": total, "train_examples": len(train)}
    ckpt, best = workdir / CKPT, None
    if (ckpt / "state.json").is_file():
        state, best = load(ckpt, model, opt, s)
        log.info("%s: resumed at step %d / %d from %s", desc, state["step"], total, ckpt)
    lengths = train.lengths
    bar = _Progress(total, state["step"], per_epoch, desc, s.progress)
    loss_sum, loss_n, t0 = 0.0, 0, time.time()
    step = state["step"]
    while step < total and not state.get("stopped"):
        epoch, k = divmod(step, per_epoch)
        model.train()
        for idx in length_grouped(lengths, s.batch_size, s.seed, epoch)[k:]:
            torch.manual_seed(_seed(s.seed, step, 1))  # dropout masks of this step, whatever came before
            b = collate(train, idx, device)
            for g in opt.param_groups:
                g["lr"] = s.lr * lr_factor(step, total, warmup)
            loss = model.loss(model(b["input_ids"], b["cu_seqlens"], b["max_seqlen"], b["position_ids"],
                                    b["token_type_ids"]), b["labels"])
            if not torch.isfinite(loss):
                from masklab.errors import MaskLabError

                raise MaskLabError(f"{desc}: loss is {float(loss)} at step {step} (lr {s.lr}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
            opt.step()
            step += 1
            loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
            bar.update(step, loss_sum / loss_n, int(b["input_ids"].numel()))
            end_of_epoch = step % per_epoch == 0 or step == total
            if end_of_epoch:
                entry = {"epoch": math.ceil(step / per_epoch), "step": step, "train_loss": loss_sum / max(loss_n, 1),
                         "seconds": time.time() - t0}
                if evaluate is not None:
                    entry.update(evaluate())
                    model.train()
                state["history"].append(entry)
                loss_sum, loss_n = 0.0, 0
                if select is not None:
                    best = _select(model, state, entry, select, best, desc)
            if end_of_epoch or (s.save_every and step % s.save_every == 0):
                state["step"] = step
                save(ckpt, model, opt, state, best)
            if step >= total or state.get("stopped"):
                break
    bar.close()
    state["step"] = step
    if best is not None:
        model.load_state_dict(best)
    return state


def _select(model, state: dict, entry: dict, sel: Select, best: Optional[dict], desc: str) -> Optional[dict]:
    """Update state["best"] / ["bad"] / ["stopped"] after an epoch -> the best weights (CPU copies)."""
    v = float(entry.get(sel.key, float("nan")))
    prev = state.get("best")
    if math.isfinite(v) and (prev is None or v < prev["value"] - 1e-4):
        state["best"], state["bad"] = {"epoch": entry["epoch"], "value": v}, 0
        return {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    if math.isfinite(v):  # without validation data (NaN) every epoch runs
        state["bad"] = state.get("bad", 0) + 1
        if state["bad"] >= sel.patience:
            state["stopped"] = True
            log.info("%s: stopped after epoch %d (%s not better for %d epochs; best: epoch %d)", desc,
                     entry["epoch"], sel.key, state["bad"], state["best"]["epoch"])
    return best


class _Progress:
    """tqdm with step, loss, tokens/s and ETA on a TTY; a log line every ~10% of the steps otherwise."""

    def __init__(self, total: int, start: int, per_epoch: int, desc: str, enabled: bool):
        self.total, self.desc, self.tokens, self.t0 = total, desc, 0, time.time()
        self.per_epoch, self.epochs = per_epoch, math.ceil(total / max(per_epoch, 1))
        self.start, self.next_log = start, start + max(1, total // 10)
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)
        self.enabled = enabled

    def update(self, step: int, loss: float, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=f"{math.ceil(step / self.per_epoch)}/{self.epochs}", loss=f"{loss:.4f}",
                                 tok_s=f"{rate:.0f}", refresh=False)
        elif self.enabled and (step >= self.next_log or step == self.total):
            el = time.time() - self.t0
            eta = el / max(step - self.start, 1) * (self.total - step)
            log.info("%s: epoch %d/%d, step %d/%d (%.0f%%): loss %.4f, %.0f tokens/s, elapsed %.0fs, eta %.0fs",
                     self.desc, math.ceil(step / self.per_epoch), self.epochs, step, self.total,
                     100 * step / self.total, loss, rate, el, eta)
            self.next_log = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def predict(model, data: Encoded, max_tokens: int = 8192, device: str = "cpu") -> torch.Tensor:
    """Logits float32 [N, num_labels] in data order (batches of <= max_tokens real tokens, by length)."""
    from masklab.downstream.finetuning.batches import by_tokens

    was = model.training
    model.eval()
    out = torch.empty(len(data), model.num_labels)
    for idx in by_tokens(data.lengths, max_tokens):
        b = collate(data, idx, device)
        out[torch.from_numpy(idx)] = model(b["input_ids"], b["cu_seqlens"], b["max_seqlen"], b["position_ids"],
                                           b["token_type_ids"]).cpu()
    model.train(was)
    return out


def read_state(workdir: Path) -> Optional[dict]:
    p = Path(workdir) / CKPT / "state.json"
    return json.loads(p.read_text()) if p.is_file() else None
