"""The training loop: one entry point for single process, torchrun DDP and DeepSpeed (see engine).

Read top to bottom: `setup` (data, process group) -> `resume_or_start` -> `build_engine` ->
`restore` -> per step `train_step`, `maybe_log`, `maybe_eval`, `handle_stop`, `maybe_save`
(each that acts first calls `track_non_finite`) -> `finish`. The pieces live in run_state.py, resume.py, step.py,
nonfinite.py and stop.py.

Host reads: a step leaves its loss, gradient norm and skip flag on the device; the loop reads
them (and the non-finite counters) only on log / eval / save steps, and polls the stop flag
across ranks every train.stop_poll_steps steps, so the host can queue steps ahead of the device.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Optional

import torch

from masklab.config import to_yaml
from masklab.config_validation import require_set
from masklab.errors import MaskLabError
from masklab.pretrain.loop import distributed as D
from masklab.pretrain.hf import init_from
from masklab.pretrain.checkpoint.integrity import allow_missing_checksums
from masklab.pretrain.checkpoint.store import latest_checkpoint, load_checkpoint, load_state, move_aside_after, save_checkpoint
from masklab.pretrain.evaluate.heldout import evaluate_batches
from masklab.pretrain.loop.metrics import MetricsLog, active_loggers, peak_memory_mb
from masklab.pretrain.loop.nonfinite import NonFiniteCounter
from masklab.pretrain.loop.progress import TrainProgress
from masklab.pretrain.loop.resume import check_out_dir_free, check_resume_compatible, checkpoint_to_resume
from masklab.pretrain.checkpoint.run_lock import RunLock
from masklab.pretrain.loop.peak import Peak
from masklab.pretrain.loop.run_state import RunState, build_engine, setup, utilisation_peak
from masklab.pretrain.loop.step import StepResult, TrainHooks, train_step
from masklab.pretrain.data.steps import step_loader
from masklab.pretrain.loop.stop import StopFlag, requeue

log = logging.getLogger("masklab.train")


def train(cfg, hooks: Optional[TrainHooks] = None) -> dict:
    """Run (or resume) training as configured. -> summary dict (final step, losses, paths).

    Single process, or one of the ranks started by torchrun / srun (DDP or DeepSpeed per
    train.launcher). SIGUSR1 (pre-emption): all ranks agree on the stop step, save, rank 0
    requeues the Slurm job; SIGTERM (scancel): the same without the requeue. Both return
    stopped=True (the process then exits 0). `hooks`: test-only fault injection."""
    require_set(cfg, "data.shards")
    if cfg.train.allow_missing_checksums:  # explicit opt-in; never switched off here (the CLI flag may have set it)
        allow_missing_checksums(True)
    cfg = init_from.configure(cfg)  # train.init_from: the model section comes from the source
    stop = StopFlag()  # before anything slow: a pre-emption signal during start-up must not kill us
    try:
        run = setup(cfg)
        with RunLock(run.run_dir, enabled=run.world.is_main):
            return run_loop(run, stop, hooks)
    finally:
        getattr(stop, "close", lambda: None)()  # restore the previous handlers (tests may stand in a stub)
        D.shutdown()


def run_loop(run: RunState, stop: StopFlag, hooks: Optional[TrainHooks]) -> dict:
    cfg = run.cfg
    resume_or_start(run)
    build_engine(run)
    restore(run)
    run.nonfinite = NonFiniteCounter(run.device, cfg.train.max_nan_skips, run.nan_total)
    metrics = open_outputs(run)
    tc, peak = cfg.train, utilisation_peak(run)
    loader = run.loader = step_loader(run.dataset, run.start, tc.max_steps, cfg.data.num_workers,
                                      pin=run.device.type == "cuda", position=run.data_position)
    bar = TrainProgress(tc.max_steps, run.start, tc.progress and run.world.is_main)
    try:
        if run.eval_set and run.start == 0:  # the untrained baseline: "loss goes down" is measured against it
            run.first_eval = maybe_eval(run, metrics, force=True)
        run.t_log = time.perf_counter()
        for step_batches in loader:
            t0 = time.perf_counter()
            result = train_step(run, step_batches, run.step, hooks)
            run.nonfinite.update(result.ok, run.step)
            run.tokens_seen = result.stats[2].double() + run.tokens_seen  # on the device: no host read
            run.flops_seen += result.flops * run.world.world_size
            run.step += 1
            run.busy_s, run.busy_steps = run.busy_s + time.perf_counter() - t0, run.busy_steps + 1
            maybe_log(run, metrics, bar, result, peak)
            maybe_eval(run, metrics)
            bar.update(1)
            if handle_stop(run, stop):
                return {"step": run.step, "stopped": True, "run_dir": str(run.run_dir)}
            maybe_save(run)
        return finish(run)
    finally:
        bar.close()
        metrics.close()


def resume_or_start(run: RunState) -> None:
    """Rank 0 decides the checkpoint to continue and every rank takes its word; an incompatible one is
    refused before the (slow) engine start. A rollback within out_dir moves the newer checkpoints aside."""
    tc = run.cfg.train
    run.ckpt = D.broadcast_object(checkpoint_to_resume(run.run_dir, tc.resume) if run.world.is_main else None)
    check_out_dir_free(run.run_dir, tc.resume, run.ckpt)
    if run.ckpt is None:
        return
    state = load_state(run.ckpt)
    check_resume_compatible(state, run.compat)
    if run.world.is_main and run.run_dir.resolve() in run.ckpt.resolve().parents:
        move_aside_after(run.run_dir, int(state["step"]))
    D.barrier()


def restore(run: RunState) -> None:
    """Load the chosen checkpoint into the model and engine (no-op when starting from step 0)."""
    if run.ckpt is None:
        if run.cfg.train.resume == "auto" and run.world.is_main:
            log.info("no complete checkpoint in %s: starting from step 0", run.run_dir / "checkpoints")
        return
    state = load_checkpoint(run.ckpt, run.model, run.engine.checkpoint_optimizer)
    run.engine.load_extra(run.ckpt)
    run.start = run.step = int(state["step"])
    run.nan_total = int(state.get("nan_skipped_total", 0))
    run.data_position = int(state["data_position"])
    run.tokens_seen = float(state.get("tokens_seen", 0.0))  # checkpoints before the count: from 0
    run.flops_seen = float(state.get("flops_seen", 0.0))
    log.info("resumed from %s at step %d (%s engine, world size %d; saved by world size %s)", run.ckpt, run.start,
             run.engine.kind, run.world.world_size, state.get("world_size", "?"))


def open_outputs(run: RunState) -> MetricsLog:
    """metrics.jsonl (cut back to the resumed step) and the run's resolved config.yaml."""
    tc = run.cfg.train
    loggers = active_loggers(tc)
    wb = None
    if "wandb" in loggers and run.world.is_main:
        from omegaconf import OmegaConf

        wb = {"project": tc.wandb_project, "group": tc.wandb_group, "config": OmegaConf.to_container(run.cfg, resolve=True)}
    metrics = MetricsLog(run.run_dir, run.world.is_main, "tensorboard" in loggers, resume_step=run.start, wandb=wb)
    if run.world.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.yaml").write_text(to_yaml(run.cfg))
    return metrics


def track_non_finite(run: RunState) -> None:
    """Read the device's skip counters (log / eval / save steps only); too many in a row abort the run."""
    tc, nf = run.cfg.train, run.nonfinite.read()
    if nf.total > run.nonfinite.seen_total:
        log.warning("step %d: %d non-finite step(s) since the previous report, updates skipped (%d in a row, "
                    "%d total)", run.step, nf.total - run.nonfinite.seen_total, nf.in_a_row, nf.total)
    run.nonfinite.seen_total = nf.total
    run.nan_run, run.nan_total = nf.in_a_row, nf.total
    if nf.abort_step >= 0:
        good = latest_checkpoint(run.run_dir)
        back = (f"; roll back to step {int(load_state(good)['step'])} with train.resume={good}" if good else
                "; no checkpoint was written yet")
        raise MaskLabError(f"aborting at step {nf.abort_step}: {tc.max_nan_skips} non-finite losses in a row "
                           f"(train.max_nan_skips={tc.max_nan_skips}); lower train.lr or check the data{back}")


def maybe_log(run: RunState, metrics: MetricsLog, bar: TrainProgress, r: StepResult, peak: Peak) -> None:
    """On log steps only: one host read of the step's device values (it waits for the device)."""
    tc, step = run.cfg.train, run.step
    if not (step % tc.log_every == 0 or step == tc.max_steps):
        return
    t = time.perf_counter()
    track_non_finite(run)
    loss, acc, grad_norm, tokens = torch.stack([r.loss, r.stats[1] / r.n_global.clamp(min=1.0).float(),
                                                r.grad_norm, r.stats[2]]).tolist()
    # mean host time per step since the previous log, the wait for the device included: the host queues
    # steps ahead, so the time of the logged step alone would not be its device time
    dt = (run.busy_s + time.perf_counter() - t) / run.busy_steps
    run.busy_s, run.busy_steps = 0.0, 0
    run.last = {"loss": loss, "mlm_acc": acc, "lr": r.lr,
                "mask_rate": r.mask_rate, "realised_mask_rate": r.n_pred_local / max(1, r.n_maskable_local),
                "grad_norm": float("nan") if run.nan_run else grad_norm, "tokens_per_s": tokens / dt,
                "step_time_s": dt, "wall_s": time.perf_counter() - run.t_log,
                "peak_memory_mb": peak_memory_mb(run.device), "utilisation": r.flops / dt / peak.measured,
                "nan_skipped_total": run.nan_total, **compute_seen(run)}
    if peak.spec:  # CUDA with a known spec sheet: MFU against the vendor's dense peak too
        run.last["utilisation_spec"] = r.flops / dt / peak.spec
    run.t_log = time.perf_counter()
    metrics.log(step, run.last)
    bar.logged(step, loss, acc, run.last["tokens_per_s"])


def compute_seen(run: RunState) -> dict:
    """Cumulative real tokens and executed FLOPs up to this step (the x axes of `masklab compare`)."""
    return {"tokens_seen": float(run.tokens_seen), "flops_seen": run.flops_seen}


def maybe_eval(run: RunState, metrics: MetricsLog, force: bool = False) -> Optional[dict]:
    tc, step = run.cfg.train, run.step
    if not run.eval_set or not (force or step % tc.eval_every == 0 or step == tc.max_steps):
        return None
    if not force:
        track_non_finite(run)  # no evaluation after the run hit train.max_nan_skips
    ev = evaluate_batches(run.model, run.eval_set, run.device, run.autocast)
    record = {**{f"eval_{k}": v for k, v in ev.items()}, **compute_seen(run)}
    metrics.log(step, record)
    if not force:
        run.first_eval = run.first_eval or ev
        run.last.update(record)
    return ev


def handle_stop(run: RunState, stop: StopFlag) -> bool:
    """A stop signal on any rank: every rank saves at this step; rank 0 requeues after a pre-emption.
    One process reads its own flag every step; ranks agree (a collective and a host read) every
    train.stop_poll_steps steps only."""
    if run.world.distributed:
        if run.step % run.cfg.train.stop_poll_steps or not D.any_rank(stop.set, run.device):
            return False
    elif not stop.set:
        return False
    path = save(run)
    if run.world.is_main:
        log.info("signal %s: saved %s at step %d, exiting", stop.signal, path, run.step)
        if getattr(stop, "requeue", False) and os.environ.get("SLURM_JOB_ID"):
            requeue(os.environ["SLURM_JOB_ID"])
    return True


def maybe_save(run: RunState) -> None:
    if run.step % run.cfg.train.save_every == 0 and run.step < run.cfg.train.max_steps:
        save(run)


def finish(run: RunState) -> dict:
    final = save(run) if (run.step > run.start or run.ckpt is None) else run.ckpt
    final = final or latest_checkpoint(run.run_dir)  # not saved (non-finite weights): the newest good one
    if run.world.is_main:
        log.info("done at step %d; checkpoint %s", run.step, final)
    return {"step": run.step, "stopped": False, "run_dir": str(run.run_dir),
            "checkpoint": str(final) if final else None, "last": run.last, "first_eval": run.first_eval}


def save(run: RunState):
    """Every rank writes its DeepSpeed shard (if any); rank 0 assembles the checkpoint atomically."""
    cfg, step, tc = run.cfg, run.step, run.cfg.train
    track_non_finite(run)  # the skip total goes into the checkpoint; past train.max_nan_skips: no save
    state = {"data_position": run.loader.sampler.position(step), "logger_step": step, "compat": run.compat,
             "masking_rate": run.collator.rate(step), "world_size": run.world.world_size, "engine": run.engine.kind,
             "zero_stage": tc.zero_stage if run.use_ds else None, "nan_skipped_total": run.nan_total,
             "out_dir": str(run.run_dir.resolve()), **compute_seen(run)}
    path, extra = None, {}
    if run.use_ds:
        extra["deepspeed"] = run.run_dir / "checkpoints" / f".ds-step_{step:08d}"
        if run.world.is_main:  # left over by a run killed mid-save: start clean
            shutil.rmtree(extra["deepspeed"], ignore_errors=True)
        D.barrier()
        run.engine.save_extra(extra["deepspeed"])
        D.barrier()
    if run.world.is_main:
        path = save_checkpoint(run.run_dir, step, run.model, run.engine.checkpoint_optimizer, state, to_yaml(cfg),
                               run.tokenizer_dir, tc.keep_last, extra_dirs=extra)
    D.barrier()
    return path
