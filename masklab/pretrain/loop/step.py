"""One optimizer step: the learning-rate schedule, the micro-batch loop, and its result.

Loss = sum of token losses / the global number of predictions of the whole optimizer step
(all ranks, all micro-batches), so results do not depend on how the batch is split.

No host synchronisation: everything the host needs (prediction and token counts, FLOPs) is
read from the CPU batches before they move to the device; the global prediction count, the
loss, the gradient norm and the skip decision stay device tensors. The loop reads them only
on log / eval / save steps (pretrain/loop/train.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from masklab.pretrain.loop import distributed as D
from masklab.pretrain.loop.flops import batch_flops


def lr_at(step: int, tc) -> float:
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.decay == "constant":
        return tc.lr
    p = min(1.0, (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))
    f = 1.0 - p if tc.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return tc.lr * (tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * f)


class TrainHooks:
    """Test-only fault injection into the loop (production runs pass none).

    `after_forward(step, out)` may change a micro-batch's forward output in place, e.g. make
    out["loss_sum"] (float32 scalar) NaN to exercise non-finite skipping."""

    def after_forward(self, step: int, out: dict) -> None:
        pass


@dataclass
class StepResult:
    """Device tensors are read by the loop only on log / eval / save steps."""
    lr: float
    loss: torch.Tensor  # float32 [] device: global mean token loss of the step
    grad_norm: torch.Tensor  # float32 [] device; NaN: the update was skipped
    ok: torch.Tensor  # bool [] device: False = non-finite loss or gradient norm, no update applied
    stats: torch.Tensor  # float32 [3] device, all-reduced (loss sum, correct predictions, tokens)
    n_global: torch.Tensor  # float64 [] device: predictions of the step, all ranks
    n_pred_local: int
    n_maskable_local: int
    flops: float  # executed matmul FLOPs of this rank's micro-batches
    mask_rate: float  # scheduled rate of the step


def host_counts(run, step_batches: list) -> tuple[int, int, int, float]:
    """From the CPU batches (no device read): -> (predictions, maskable tokens, tokens, FLOPs) of this rank."""
    n_pred = sum(b.num_predictions for b in step_batches)
    n_mask = sum(b.num_maskable for b in step_batches)
    tokens = sum(b.num_tokens for b in step_batches)
    m, special = run.cfg.masking, run.collator.tok.special_ids
    insert = m.insert_layer if m.insertion == "late" else 0
    flops = sum(batch_flops(run.cfg.model, run.model.vocab_size, b, insert, special)
                for b in step_batches)
    return n_pred, n_mask, tokens, flops


def train_step(run, step_batches: list, step: int, hooks: Optional[TrainHooks] = None) -> StepResult:
    """Forward + backward over this rank's micro-batches of `step`, then one engine step."""
    tc, device, engine, world = run.cfg.train, run.device, run.engine, run.world
    torch.manual_seed(tc.seed * 1_000_003 + step * 1009 + world.rank)  # dropout: counter-based per step
    lr = lr_at(step, tc)
    engine.lr(lr)
    n_pred_local, n_maskable, tokens, flops = host_counts(run, step_batches)
    # one non-blocking copy for both host counts (torch.tensor(..., device=cuda) would wait for the stream);
    # float64 so that world / n rounds once to float32, as the Python scalar of the loss scale did
    counts = D.all_reduce_sum(torch.tensor([float(n_pred_local), float(tokens)], dtype=torch.float64)
                              .to(device, non_blocking=True))
    n_global = counts[0].clamp(min=1.0)
    scale = (world.world_size / n_global).float()  # DDP averages over ranks: scale back by world size
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for i, b in enumerate(step_batches):
        b = b.to(device, non_blocking=True)
        last_micro = i == len(step_batches) - 1
        ctx = engine.no_sync(last_micro)
        with ctx, run.autocast:
            out = engine.forward(b)
            if hooks is not None:
                hooks.after_forward(step, out)
            loss = out["loss_sum"] * scale  # gradient of the global mean
        with ctx:
            engine.backward(loss, last_micro)
        loss_sum += out["loss_sum"].detach().float()
        correct += out["n_correct"].detach()
    stats = torch.cat([D.all_reduce_sum(torch.stack([loss_sum, correct.float()])), counts[1:].float()])
    step_loss = stats[0] / n_global.float()
    grad_norm, ok = engine.step(torch.isfinite(step_loss))  # the engine also skips a non-finite gradient norm
    return StepResult(lr, step_loss, grad_norm, ok, stats, counts[0], n_pred_local, n_maskable, flops,
                      step_batches[0].mask_rate)
