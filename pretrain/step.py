"""One optimizer step: the learning-rate schedule, the micro-batch loop, and its result.

Loss = sum of token losses / the global number of predictions of the whole optimizer step
(all ranks, all micro-batches), so results do not depend on how the batch is split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from masklab.pretrain import distributed as D
from masklab.pretrain.metrics import step_flops


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
    lr: float
    loss: float  # global mean token loss of the step
    grad_norm: float  # NaN: the update was skipped
    skipped: bool  # non-finite loss or gradient norm: no update applied
    stats: torch.Tensor  # float32 [3] all-reduced (loss sum, correct predictions, tokens)
    n_global: float  # predictions of the step, all ranks
    n_pred_local: int
    n_maskable_local: int
    flops: float  # executed matmul FLOPs of this rank's micro-batches
    mask_rate: float  # scheduled rate of the step


def train_step(run, step_batches: list, step: int, hooks: Optional[TrainHooks] = None) -> StepResult:
    """Forward + backward over this rank's micro-batches of `step`, then one engine step."""
    tc, device, engine, world = run.cfg.train, run.device, run.engine, run.world
    torch.manual_seed(tc.seed * 1_000_003 + step * 1009 + world.rank)  # dropout: counter-based per step
    lr = lr_at(step, tc)
    engine.lr(lr)
    n_pred_local = sum(b.num_predictions for b in step_batches)
    n_global = D.all_reduce_sum(torch.tensor([float(n_pred_local)], device=device)).item()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    tokens, flops = 0, 0.0
    for i, b in enumerate(step_batches):
        flops += step_flops(run.cfg.model, run.model.vocab_size, b.cu_seqlens[1:] - b.cu_seqlens[:-1],
                            b.num_predictions)
        tokens += b.num_tokens
        b = b.to(device, non_blocking=True)
        last_micro = i == len(step_batches) - 1
        ctx = engine.no_sync(last_micro)
        with ctx, run.autocast:
            out = engine.forward(b)
            if hooks is not None:
                hooks.after_forward(step, out)
            # gradient of the global mean; DDP averages over ranks, so scale back by world size
            loss = out["loss_sum"] * (world.world_size / max(n_global, 1.0))
        with ctx:
            engine.backward(loss, last_micro)
        loss_sum += out["loss_sum"].detach().float()
        correct += out["n_correct"].detach()
    stats = D.all_reduce_sum(torch.stack([loss_sum, correct.float(), torch.tensor(float(tokens), device=device)]))
    step_loss = (stats[0] / max(n_global, 1.0)).item()
    bad_loss = not math.isfinite(step_loss)
    grad_norm = engine.step(skip=bad_loss)  # a non-finite gradient norm is skipped by the engine too
    return StepResult(lr, step_loss, grad_norm, bad_loss or not math.isfinite(grad_norm), stats, n_global,
                      n_pred_local, sum(b.num_maskable for b in step_batches), flops, step_batches[0].mask_rate)
