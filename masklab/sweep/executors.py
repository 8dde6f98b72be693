"""Where cells run: locally (one after another, or N at once), or on Slurm as one job array.

Local: each cell is a `masklab sweep-cell` subprocess (its own peak memory and CPU time; a crash
ends that cell only), with cores // parallel torch threads; its output goes to cells/<hash>/log.txt.
Finished cells are skipped; interrupted ones resume from their checkpoints.

Slurm: plain `sbatch --array` (not submitit: no extra dependency, and pre-emption stays the one
mechanism slurm/pretrain.sbatch already uses, USR1 -> checkpoint -> `scontrol requeue` of the
array element, instead of submitit's pickled-callable checkpointing). One array element per
unfinished cell trains it (slurm/sweep_cell.sbatch, `--requeue --signal=USR1@180`); a second
array evaluates, each element depending on its training element (`--dependency=aftercorr`), so
evaluations start as soon as their own cell is trained and never after a failed one.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from masklab.errors import MaskLabError
from masklab.sweep.cells import Cell
from masklab.sweep.run_cell import is_finished, is_trained

log = logging.getLogger("masklab.sweep")
ROOT = Path(__file__).resolve().parents[2]


def _cell_cmd(sweep_dir: Path, cell: Cell, threads: int) -> list[str]:
    return [sys.executable, "-m", "masklab.cli", "sweep-cell", str(sweep_dir), cell.hash, "--threads", str(threads)]


def run_local(spec, sweep_dir: Path, cells: list[Cell], parallel: int = 1) -> dict:
    """Run every unfinished cell; -> {"done": [...], "skipped": [...], "failed": [...]} (hashes)."""
    evals = list(spec.evaluations)
    todo = [c for c in cells if not is_finished(c.dir(sweep_dir), evals)]
    skipped = [c.hash for c in cells if c not in todo]
    for c in cells:
        if c.hash in skipped:
            log.info("cell %s (%s): finished, skipped", c.name, c.hash)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    running: dict = {}
    done, failed = [], []
    queue = list(todo)
    n = len(todo)
    while queue or running:
        while queue and len(running) < parallel:
            c = queue.pop(0)
            d = c.dir(sweep_dir)
            d.mkdir(parents=True, exist_ok=True)
            logf = open(d / "log.txt", "a")
            state = "resuming" if (d / "run" / "checkpoints").is_dir() and not is_trained(d) else "starting"
            log.info("[%d/%d] %s cell %s (%s), %d steps", n - len(queue), n, state, c.name, c.hash, c.max_steps)
            running[c.hash] = (subprocess.Popen(_cell_cmd(sweep_dir, c, threads), stdout=logf,
                                                stderr=subprocess.STDOUT, env=env), logf, c)
        time.sleep(0.2)
        for h, (p, logf, c) in list(running.items()):
            if p.poll() is None:
                continue
            logf.close()
            del running[h]
            if p.returncode == 0 and is_finished(c.dir(sweep_dir), evals):
                done.append(h)
                log.info("cell %s (%s) finished", c.name, h)
            else:
                failed.append(h)
                tail = (c.dir(sweep_dir) / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
                log.error("cell %s (%s) failed (exit %s): %s", c.name, h, p.returncode, " | ".join(tail))
    return {"done": done, "skipped": skipped, "failed": failed}


def _sbatch(args: list[str], env: dict) -> str:
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise MaskLabError(f"sbatch failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]


def submit_slurm(spec, sweep_dir: Path, cells: list[Cell]) -> dict:
    """Submit the training array and the dependent evaluation array for the unfinished cells."""
    from shutil import which

    if which("sbatch") is None:
        raise MaskLabError("executor.kind=slurm but sbatch is not on PATH (use executor.kind=local)")
    evals = list(spec.evaluations)
    todo = [c for c in cells if not is_finished(c.dir(sweep_dir), evals)]
    if not todo:
        log.info("every cell is finished: nothing to submit")
        return {"train_job": None, "eval_job": None, "cells": []}
    sdir = Path(sweep_dir).resolve() / "slurm"
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "cells.txt").write_text("".join(c.hash + "\n" for c in todo))
    s = spec.executor.slurm
    common = [f"--time={s.time}", f"--cpus-per-task={s.cpus_per_task}", "--nodes=1", "--ntasks=1"]
    common += [f"--partition={s.partition}"] if s.partition else []
    common += [f"--mem={s.mem}"] if s.mem else []
    common += list(s.extra)
    array = f"0-{len(todo) - 1}" + (f"%{s.max_parallel}" if s.max_parallel else "")
    env = dict(os.environ)
    if not env.get("MASKLAB_VENV"):
        env.setdefault("MASKLAB_PYTHON", sys.executable)
    env.setdefault("PYTHONPATH", str(ROOT))
    script = str(ROOT / "slurm" / "sweep_cell.sbatch")
    sd = str(Path(sweep_dir).resolve())
    train_job = _sbatch([f"--array={array}", f"--job-name={spec.name}-train", *common,
                         f"--output={sdir}/train-%A_%a.out", script, sd, "train"], env)
    eval_job = _sbatch([f"--array={array}", f"--job-name={spec.name}-eval", *common,
                        f"--dependency=aftercorr:{train_job}", "--kill-on-invalid-dep=yes",
                        f"--output={sdir}/eval-%A_%a.out", script, sd, "eval"], env)
    jobs = {"train_job": train_job, "eval_job": eval_job, "cells": [c.hash for c in todo],
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(sdir / "jobs.jsonl", "a") as f:
        f.write(json.dumps(jobs) + "\n")
    log.info("submitted training array %s and evaluation array %s (%d cells)", train_job, eval_job, len(todo))
    return jobs


def wait_slurm(jobs: dict, timeout: float = 0) -> None:
    """Poll squeue until both arrays have left the queue."""
    ids = [j for j in (jobs.get("train_job"), jobs.get("eval_job")) if j]
    t0 = time.time()
    while ids:
        r = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True)
        if not r.stdout.strip():
            return
        if timeout and time.time() - t0 > timeout:
            raise MaskLabError(f"jobs {ids} still queued or running after {timeout:.0f}s")
        time.sleep(2)
