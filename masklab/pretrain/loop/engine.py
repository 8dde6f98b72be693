"""One small interface over the three ways to step a model: plain, torch DDP, DeepSpeed.

The loop calls: `lr(value)`; per micro-batch `forward(batch)` and `backward(loss, last_micro)`
inside `no_sync(last_micro)`; then `step(loss_ok)` (clip + optimizer step + zero_grad; a
non-finite loss or gradient norm skips the update; -> device grad norm, device ok flag);
`zero_grad()`. Checkpoints: our safetensors
checkpoint stores `checkpoint_optimizer` (None for DeepSpeed), and `save_extra(dir)` /
`load_extra(ckpt)` write / read the engine's own state (DeepSpeed: its ZeRO-partitioned
optimizer, every rank) inside our checkpoint directory.

Loss contract: the loop passes sum(token losses) * world_size / global prediction count, so
that DDP's gradient *average* over ranks gives the gradient of the global mean. DeepSpeed
also averages over ranks, and in addition divides by gradient_accumulation_steps inside
`backward`: we multiply by it first, so all three engines produce the same gradient.

DeepSpeed config: built here from our structured config (one source of truth): ZeRO stage
(1 or 2), bf16, gradient clipping, micro-batch and accumulation, AdamW with
`"torch_adam": true`. DeepSpeed's fused Adam and its Lamb need CUDA ("type": "Lamb" fails
on CPU with "not implemented on CPU backend"; fp16 is not supported on CPU), so on CPU the
torch AdamW is the only working choice, and it is the same update as the plain engine's.
A non-finite gradient makes DeepSpeed's ZeRO optimizer skip the update by itself (global
norm check in fp32, `check_grad_overflow` in bf16); `step` then only verifies it, reading the
loss flag on the host (DeepSpeed's own overflow check reads the device every step anyway).

The plain / DDP engine skips on the device, with no host read: the fused AdamW takes a
`found_inf` tensor (the mechanism torch's GradScaler uses); when it is 1 the kernel leaves
parameters, exp_avg and exp_avg_sq untouched and the step counter is put back, exactly the
state of an update that was never applied.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from masklab.errors import CheckpointError, ConfigError, MaskLabError
from masklab.pretrain.loop.deepspeed_load import weights_only_torch_load
from masklab.pretrain.checkpoint.integrity import run_key, verify_manifest

log = logging.getLogger("masklab.engine")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Engine:
    kind = "single"

    def __init__(self, model, tc, device, world):
        self.model, self.tc, self.device, self.world = model, tc, device, world
        # fused AdamW is ~6x faster than the for-each version on CPU (shared/PERF_BASELINES.md)
        self.optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas),
                                           eps=tc.eps, fused=True)
        self.module = model
        if world.distributed:
            self.kind = "ddp"
            self.module = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

    def forward(self, batch):
        return self.module(batch)

    def no_sync(self, last_micro: bool):
        return self.module.no_sync() if self.kind == "ddp" and not last_micro else contextlib.nullcontext()

    def backward(self, loss, last_micro: bool) -> None:
        loss.backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self, value: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = value

    def step(self, loss_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip + step + zero_grad, all on the device. `loss_ok`: bool [] (the step's loss is finite).
        -> (grad norm float32 [], NaN when skipped; ok bool []: the update was applied)."""
        clip = self.tc.grad_clip if self.tc.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        # a finite loss can still give inf/NaN gradients: skip those too (as DeepSpeed does)
        ok = loss_ok & torch.isfinite(norm)
        self.optimizer.found_inf = (~ok).float()  # read by the fused kernel on the device: 1 = leave all as is
        self.optimizer.step()
        self.zero_grad()
        return torch.where(ok, norm.float(), float("nan")), ok

    @property
    def checkpoint_optimizer(self):
        """The optimizer our safetensors checkpoint stores (None: the engine saves its own)."""
        return self.optimizer

    def save_extra(self, directory: Path) -> None:
        pass

    def load_extra(self, ckpt: Path) -> None:
        pass


class DeepSpeedEngine(Engine):
    kind = "deepspeed"

    def __init__(self, model, tc, device, world, micro_batch: int, accum: int, global_batch: int):
        try:
            import deepspeed
        except ImportError:
            raise ConfigError("train.launcher=deepspeed needs DeepSpeed (pip install --no-build-isolation "
                              "'masklab[deepspeed]')") from None
        if tc.zero_stage not in (1, 2):
            raise ConfigError(f"train.zero_stage={tc.zero_stage}: MaskLab's DeepSpeed engine supports ZeRO 1 and 2 "
                              "(stage 3 partitions the parameters our checkpoint and eval read whole; for "
                              "no ZeRO use train.launcher=ddp)")
        self.model, self.tc, self.device, self.world, self.accum = model, tc, device, world, accum
        ds_config = {
            "train_batch_size": global_batch,
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": accum,
            "gradient_clipping": tc.grad_clip if tc.grad_clip > 0 else 0.0,
            "zero_optimization": {"stage": tc.zero_stage},
            "bf16": {"enabled": tc.precision == "bf16"},
            "optimizer": {"type": "AdamW", "params": {"lr": tc.lr, "betas": list(tc.betas), "eps": tc.eps,
                                                      "weight_decay": tc.weight_decay, "torch_adam": True}},
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(
            model, tc.weight_decay), config=ds_config)
        self.module = self.ds
        log.info("DeepSpeed engine: ZeRO %d, bf16 %s, micro %d x accum %d", tc.zero_stage, tc.precision == "bf16",
                 micro_batch, accum)

    def no_sync(self, last_micro: bool):
        return contextlib.nullcontext()  # DeepSpeed reduces at the accumulation boundary itself

    def backward(self, loss, last_micro: bool) -> None:
        # DeepSpeed divides by gradient_accumulation_steps; our loss is already the global mean
        self.ds.backward(loss * self.accum)
        if not last_micro:
            self.ds.step()  # not the boundary: only advances DeepSpeed's micro-step counter

    def zero_grad(self) -> None:
        self.ds.zero_grad()

    def step(self, loss_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The accumulation boundary: DeepSpeed clips and steps, or skips a non-finite gradient itself.
        Host reads here (the loss flag, DeepSpeed's applied flag and norm): DeepSpeed syncs in its
        overflow check anyway. -> (grad norm float32 [], ok bool []) on the device, as the plain engine."""
        self.ds.step()
        applied = self.ds.was_step_applied()
        if applied and not bool(loss_ok):
            raise MaskLabError("DeepSpeed applied an update with a non-finite loss (its overflow check is off?)")
        norm = self.ds.get_global_grad_norm() if applied else None  # not applied: inf/NaN gradients, skipped
        norm = float("nan") if norm is None else float(norm)
        return (torch.tensor(norm, dtype=torch.float32).to(self.device, non_blocking=True),
                torch.tensor(applied).to(self.device, non_blocking=True))

    @property
    def checkpoint_optimizer(self):
        return None

    def save_extra(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(directory), tag="state")

    def load_extra(self, ckpt: Path) -> None:
        """DeepSpeed's format is pickle. Two guards: its state is read only from a checkpoint whose
        sha256 manifest is signed by this train.out_dir's run key (pretrain/checkpoint/integrity.py), i.e. one
        this run directory wrote, or with train.trust_checkpoint=true for a copied run; and every
        torch.load DeepSpeed makes then runs with weights_only=True and an exact allow-list
        (pretrain/loop/deepspeed_load.py), so even a trusted file cannot run code."""
        ckpt = Path(ckpt)
        if not (ckpt / "deepspeed").is_dir():
            raise CheckpointError(f"{ckpt}: no DeepSpeed state (deepspeed/) in this checkpoint: resume it with the "
                                  "launcher that wrote it")
        signed = verify_manifest(ckpt, run_key(Path(self.tc.out_dir)))  # a changed file is an error either way
        if not signed and not self.tc.trust_checkpoint:
            raise CheckpointError(f"{ckpt}: refusing to load its DeepSpeed state: DeepSpeed's format runs pickle "
                                  f"(arbitrary code), and this checkpoint is not signed by train.out_dir="
                                  f"{self.tc.out_dir} (written elsewhere, or crafted). If it is a copy of your own "
                                  "run, set train.trust_checkpoint=true")
        with weights_only_torch_load():
            self.ds.load_checkpoint(str(ckpt / "deepspeed"), tag="state", load_module_strict=True)
