"""The training loop: one entry point for single process, torchrun DDP (and DeepSpeed, see engine).

Loss = sum of token losses / the global number of predictions of the whole optimizer step
(all ranks, all micro-batches), so results do not depend on how the batch is split.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from masklab import kernels
from masklab.data_prep.shards import ShardSet
from masklab.config import require_set, to_yaml
from masklab.errors import ConfigError, MaskLabError
from masklab.pretrain import distributed as D
from masklab.pretrain.checkpoint import latest_checkpoint, load_checkpoint, load_state, save_checkpoint
from masklab.pretrain.data import DATA_HINTS, DATA_OLD_DEFAULTS, Collator, data_compat, eval_batches, open_collator
from masklab.pretrain.evaluate import evaluate_batches
from masklab.pretrain.masking import MASK_KEYS, MASKING_ALGORITHM
from masklab.pretrain.steps import StepDataset, make_budget, step_loader
from masklab.pretrain.metrics import MetricsLog, matmul_peak_flops, peak_memory_mb, step_flops
from masklab.pretrain.engine import DeepSpeedEngine, Engine
from masklab.pretrain.model import build_model

log = logging.getLogger("masklab.train")


def lr_at(step: int, tc) -> float:
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.decay == "constant":
        return tc.lr
    p = min(1.0, (step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))
    f = 1.0 - p if tc.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return tc.lr * (tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * f)


def pick_device(name: str, world: D.World) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but CUDA is not available (use train.device=cpu)")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


class StopFlag:
    """SIGUSR1/SIGTERM (Slurm's pre-emption warning) -> save at the next step boundary and exit."""

    def __init__(self):
        self.set = False
        self.signal: Optional[int] = None
        self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGUSR1, signal.SIGTERM)}

    def _handler(self, signum, frame):
        if not self.set:
            log.warning("received %s: will save and stop at the end of this step", signal.Signals(signum).name)
        self.set, self.signal = True, signum

    def close(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def resume_compat(cfg, world: D.World, engine_kind: str, tokenizer_sha: str) -> dict:
    """What must match between a checkpoint and the run resuming it (recorded in state.json).

    Global batch, seq len, seed and tokenizer fix the data order and the masks (data position is
    step * global batch), so they must match. The engine must match (a DeepSpeed checkpoint keeps
    its optimizer in DeepSpeed's format). DDP and single-process runs may change world size and
    micro-batch (only the split of the same global batch changes: same result up to fp
    summation order). DeepSpeed runs must also keep world size and ZeRO stage: ZeRO partitions
    the optimizer state by rank, and we refuse rather than re-partition."""
    tc = cfg.train
    compat = {"data.batch_size": cfg.data.batch_size, "data.seq_len": cfg.data.seq_len, "train.seed": tc.seed,
              "data.shards_sha": tokenizer_sha, "engine": engine_kind == "deepspeed"}
    compat["masking.algorithm"] = MASKING_ALGORITHM
    compat.update({f"masking.{k}": getattr(cfg.masking, k) for k in MASK_KEYS})
    if engine_kind == "deepspeed":
        compat.update({"deepspeed.world_size": world.world_size, "train.zero_stage": tc.zero_stage})
    return compat


_HINT = {"engine": "the checkpoint was written by a different engine (True = DeepSpeed): use the launcher it was "
                   "trained with", "deepspeed.world_size": "DeepSpeed resumes need the same number of processes",
         "train.zero_stage": "ZeRO optimizer state is partitioned per stage",
         "masking.algorithm": "this version of MaskLab draws different masks from the same seed than the one that "
                              "wrote the checkpoint", **DATA_HINTS}
# Keys that checkpoints written before they existed are known to have had.
_OLD_DEFAULTS = {"masking.algorithm": 1, **DATA_OLD_DEFAULTS}


def check_resume_compatible(saved: dict, current: dict) -> None:
    """A resume that would silently change the data order, masking or vocabulary is refused, not converted."""
    have = {**_OLD_DEFAULTS, **saved.get("compat", {})}
    bad = [f"{k}: checkpoint {have[k]} vs now {v}" + (f" ({_HINT[k]})" if k in _HINT else "")
           for k, v in current.items() if k in have and have[k] != v]
    if bad:
        raise MaskLabError("cannot resume: the run changed in a way that breaks exact resume (" + "; ".join(bad) +
                           "). Use a new train.out_dir, or train.resume=never.")


def check_out_dir_free(run_dir: Path, resume: str, ckpt: Optional[Path]) -> None:
    """A run that does not continue out_dir's own checkpoints must not write beside them: its
    checkpoints would mix with theirs, and a later automatic resume could pick the other run's
    newest one. Rolling back to an earlier checkpoint of the same out_dir is allowed."""
    if resume == "auto":
        return
    existing = latest_checkpoint(run_dir)
    if existing is None or (ckpt is not None and Path(run_dir).resolve() in Path(ckpt).resolve().parents):
        return
    raise ConfigError(f"train.out_dir={run_dir} already holds checkpoints (newest {existing.name}) and "
                      f"train.resume={resume} starts another run there: use a new train.out_dir, remove "
                      f"{Path(run_dir) / 'checkpoints'}, or train.resume=auto to continue it")


def requeue(job_id: str) -> None:
    """Put the Slurm job back in the queue (it restarts with SLURM_RESTART_COUNT+1 and resumes).
    Slurm kills the job's steps at once, so this runs only after every rank has saved."""
    log.info("requeueing Slurm job %s", job_id)
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("scontrol requeue %s failed: %s (resubmit by hand; the checkpoint is saved)", job_id, e)
        return
    if r.returncode != 0:
        log.warning("scontrol requeue %s failed: %s (submit with --requeue; the checkpoint is saved)", job_id,
                    r.stderr.strip())


def train(cfg) -> dict:
    """Run (or resume) training as configured. -> summary dict (final step, losses, paths).

    Single process, or one of the ranks started by torchrun / srun (DDP or DeepSpeed per
    train.launcher). SIGUSR1/SIGTERM: all ranks agree on the stop step, save, rank 0 requeues
    the Slurm job, and this returns with stopped=True (the process then exits 0)."""
    require_set(cfg, "data.shards")
    stop = StopFlag()  # before anything slow: a pre-emption signal during start-up must not kill us
    try:
        return _train(cfg, stop)
    finally:
        getattr(stop, "close", lambda: None)()  # restore the previous handlers (tests may stand in a stub)
        D.shutdown()


def _train(cfg, stop: StopFlag) -> dict:
    world = D.world_from_env()
    if cfg.train.launcher == "single" and world.distributed:
        raise ConfigError(f"train.launcher=single, but this process is rank {world.rank} of {world.world_size} "
                          "(started by torchrun/srun): use train.launcher=auto, ddp or deepspeed")
    device = pick_device(cfg.train.device, world)
    D.init(world, device, cfg.train.dist_timeout_s)
    kernels.set_backend(cfg.kernels.backend)
    if cfg.train.num_threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.train.num_threads)
    tc = cfg.train
    run_dir = Path(tc.out_dir)
    shards = ShardSet(cfg.data.shards, "train")
    val = ShardSet(cfg.data.shards, "validation") if shards.manifest["counts"].get("validation", {}).get("documents") else None
    mb = cfg.data.micro_batch_size or cfg.data.batch_size // world.world_size
    collator = open_collator(cfg, shards, world)  # rank 0 builds the sample index once, the others map it
    dataset = StepDataset(collator, budget=make_budget(collator, cfg, world.rank, world.world_size))
    use_ds = tc.launcher == "deepspeed"
    start, ckpt, nan_total, data_position = 0, None, 0, None
    if tc.resume == "auto":
        ckpt = latest_checkpoint(run_dir)
    elif tc.resume not in ("never", ""):
        ckpt = Path(tc.resume)
    check_out_dir_free(run_dir, tc.resume, ckpt)
    compat = resume_compat(cfg, world, "deepspeed" if use_ds else "torch", shards.manifest["tokenizer"]["sha256"])
    compat.update(data_compat(cfg, shards))
    if ckpt is not None:  # refuse an incompatible resume before the (slow) engine start
        check_resume_compatible(load_state(ckpt), compat)

    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, shards.tokenizer, cfg.masking).to(device)
    if use_ds:
        engine = DeepSpeedEngine(model, tc, device, world, dataset.budget.micro_samples, dataset.accum,
                                 dataset.budget.global_samples)
    else:
        engine = Engine(model, tc, device, world)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, engine.checkpoint_optimizer)
        engine.load_extra(ckpt)
        start, nan_total = int(state["step"]), int(state.get("nan_skipped_total", 0))
        data_position = int(state["data_position"])
        log.info("resumed from %s at step %d (%s engine, world size %d; saved by world size %s)", ckpt, start,
                 engine.kind, world.world_size, state.get("world_size", "?"))
    elif tc.resume == "auto" and world.is_main:
        log.info("no complete checkpoint in %s: starting from step 0", run_dir / "checkpoints")
    metrics = MetricsLog(run_dir, world.is_main, tc.tensorboard, resume_step=start)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    eval_set = eval_batches(Collator(cfg, val), mb, cfg.data.eval_batches) if val is not None else []
    tok_dir = Path(cfg.data.shards) / "tokenizer"
    peak = matmul_peak_flops(device, torch.bfloat16 if tc.precision == "bf16" and device.type == "cuda" else torch.float32)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    def save(step: int) -> Path:
        state = {"data_position": loader.sampler.position(step), "logger_step": step, "compat": compat,
                 "masking_rate": collator.rate(step), "world_size": world.world_size,
                 "engine": engine.kind, "zero_stage": tc.zero_stage if use_ds else None, "nan_skipped_total": nan_total}
        path, extra = None, {}
        if use_ds:  # every rank writes its ZeRO shard; rank 0 then assembles the checkpoint atomically
            extra["deepspeed"] = run_dir / "checkpoints" / f".ds-step_{step:08d}"
            if world.is_main:  # left over by a run killed mid-save: start clean
                shutil.rmtree(extra["deepspeed"], ignore_errors=True)
            D.barrier()
            engine.save_extra(extra["deepspeed"])
            D.barrier()
        if world.is_main:
            path = save_checkpoint(run_dir, step, model, engine.checkpoint_optimizer, state, to_yaml(cfg), tok_dir,
                                   tc.keep_last, extra_dirs=extra)
        D.barrier()
        return path

    loader = step_loader(dataset, start, tc.max_steps, cfg.data.num_workers, pin=device.type == "cuda",
                         position=data_position)
    bar = tqdm(total=tc.max_steps, initial=start, disable=not (tc.progress and world.is_main), desc="train",
               dynamic_ncols=True)
    nan_run, step, first_eval, last = 0, start, None, {}
    if eval_set and start == 0:  # the untrained baseline: "loss goes down" is measured against it
        first_eval = evaluate_batches(model, eval_set, device, autocast)
        metrics.log(0, {f"eval_{k}": v for k, v in first_eval.items()})
    t_last = time.perf_counter()
    for step_batches in loader:
        step_t0 = time.perf_counter()
        torch.manual_seed(tc.seed * 1_000_003 + step * 1009 + world.rank)  # dropout: counter-based per step
        lr = lr_at(step, tc)
        engine.lr(lr)
        n_pred_local = sum(b.num_predictions for b in step_batches)
        n_global = D.all_reduce_sum(torch.tensor([float(n_pred_local)], device=device)).item()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        tokens, flops = 0, 0.0
        for i, b in enumerate(step_batches):
            b = b.to(device, non_blocking=True)
            last_micro = i == len(step_batches) - 1
            ctx = engine.no_sync(last_micro)
            with ctx, autocast:
                out = engine.forward(b)
                if os.environ.get("MASKLAB_INJECT_NAN_STEP") == str(step):  # fault-injection hook for tests
                    out["loss_sum"] = out["loss_sum"] * float("nan")
                # gradient of the global mean; DDP averages over ranks, so scale back by world size
                loss = out["loss_sum"] * (world.world_size / max(n_global, 1.0))
            with ctx:
                engine.backward(loss, last_micro)
            loss_sum += out["loss_sum"].detach().float()
            correct += out["n_correct"].detach()
            tokens += b.num_tokens
            flops += step_flops(cfg.model, model.vocab_size, (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).cpu(), b.num_predictions)
        stats = D.all_reduce_sum(torch.stack([loss_sum, correct.float(), torch.tensor(float(tokens), device=device)]))
        step_loss = (stats[0] / max(n_global, 1.0)).item()
        bad_loss = not math.isfinite(step_loss)
        grad_norm = engine.step(skip=bad_loss)  # a non-finite gradient norm is skipped by the engine too
        if bad_loss or not math.isfinite(grad_norm):
            nan_run, nan_total = nan_run + 1, nan_total + 1
            log.warning("step %d: non-finite %s, update skipped (%d in a row, %d total)", step,
                        "loss" if bad_loss else "gradient norm", nan_run, nan_total)
            if nan_run >= tc.max_nan_skips:
                raise MaskLabError(f"aborting: {nan_run} non-finite losses in a row (train.max_nan_skips="
                                   f"{tc.max_nan_skips}); lower train.lr or check the data")
        else:
            nan_run = 0
        step += 1
        dt = time.perf_counter() - step_t0
        if step % tc.log_every == 0 or step == tc.max_steps:
            tok_total = stats[2].item()
            last = {"loss": step_loss, "mlm_acc": (stats[1] / max(n_global, 1.0)).item(), "lr": lr,
                    "mask_rate": step_batches[0].mask_rate,
                    "realised_mask_rate": n_pred_local / max(1, sum(b.num_maskable for b in step_batches)),
                    "grad_norm": grad_norm if nan_run == 0 else float("nan"), "tokens_per_s": tok_total / dt,
                    "step_time_s": dt, "wall_s": time.perf_counter() - t_last,
                    "peak_memory_mb": peak_memory_mb(device), "utilisation": flops / dt / peak,
                    "nan_skipped_total": nan_total}
            t_last = time.perf_counter()
            metrics.log(step, last)
            bar.set_postfix(loss=f"{step_loss:.3f}", acc=f"{last['mlm_acc']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
        if eval_set and (step % tc.eval_every == 0 or step == tc.max_steps):
            ev = evaluate_batches(model, eval_set, device, autocast)
            first_eval = first_eval or ev
            metrics.log(step, {f"eval_{k}": v for k, v in ev.items()})
            last.update({f"eval_{k}": v for k, v in ev.items()})
        bar.update(1)
        if D.any_rank(stop.set, device):
            path = save(step)
            if world.is_main:
                log.info("signal %s: saved %s at step %d, exiting", stop.signal, path, step)
            if world.is_main and os.environ.get("SLURM_JOB_ID"):
                requeue(os.environ["SLURM_JOB_ID"])
            bar.close(), metrics.close()
            return {"step": step, "stopped": True, "run_dir": str(run_dir)}
        if step % tc.save_every == 0 and step < tc.max_steps:
            save(step)
    bar.close()
    final = save(step) if (step > start or ckpt is None) else ckpt
    metrics.close()
    if world.is_main:
        log.info("done at step %d; checkpoint %s", step, final)
    return {"step": step, "stopped": False, "run_dir": str(run_dir), "checkpoint": str(final) if final else None,
            "last": last, "first_eval": first_eval}
