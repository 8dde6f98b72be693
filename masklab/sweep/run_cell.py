"""One cell, in its own process (`masklab sweep-cell SWEEP_DIR HASH`): train, then evaluate.

Training resumes from the cell's own checkpoints (train.resume=auto: the existing exact resume),
so a killed or pre-empted cell continues where it saved. Each training segment appends one line
to usage.jsonl at its start and one at its end (wall seconds, CPU seconds of this process and its
threads, peak RSS; a segment killed with SIGKILL has no end line); trained.json
marks the end of training, eval_<name>.json each evaluation. Every file is written atomically.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path

from masklab.errors import MaskLabError
from masklab.sweep.cells import Cell, load_plan, read_cell_config

log = logging.getLogger("masklab.sweep")


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:  # one write of a whole line (O_APPEND): readers never see half a record
        f.write(json.dumps(record) + "\n")


def is_trained(cell_dir: Path) -> bool:
    return (cell_dir / "trained.json").is_file()


def missing_evals(cell_dir: Path, evaluations: list) -> list:
    return [e for e in evaluations if not (cell_dir / f"eval_{e}.json").is_file()]


def is_finished(cell_dir: Path, evaluations: list) -> bool:
    return is_trained(cell_dir) and not missing_evals(cell_dir, evaluations)


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024  # CPU seconds, peak RSS MiB (KiB on Linux)


def train_cell(cell: Cell, cell_dir: Path) -> bool:
    """-> True when training finished (False: stopped by a signal, the checkpoint is saved)."""
    if is_trained(cell_dir):
        return True
    cfg = read_cell_config(cell_dir)
    if cell.untrained:
        write_json(cell_dir / "trained.json", {"steps": 0, "untrained": True, "model": cfg.train.init_from})
        return True
    from masklab.pretrain.loop.train import train

    # W&B (train.loggers=[..., wandb]): the sweep's cells form one group, each run named by its cell
    os.environ.setdefault("WANDB_RUN_GROUP", cell.extra.get("sweep", "") or "masklab-sweep")
    os.environ.setdefault("WANDB_NAME", f"{cell.variant}-s{cell.seed}")
    cpu0, t0 = _usage()[0], time.time()
    _append(cell_dir / "usage.jsonl", {"event": "start", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                       "slurm_job": os.environ.get("SLURM_JOB_ID")})
    result, err = None, None
    try:
        result = train(cfg)
    except BaseException as e:  # the usage of a failed / interrupted segment still counts
        err = repr(e)
        raise
    finally:  # (a SIGKILL skips this: that segment has a start line and no end line)
        cpu, rss = _usage()
        _append(cell_dir / "usage.jsonl", {"event": "end", "wall_s": time.time() - t0, "cpu_s": cpu - cpu0,
                                           "peak_rss_mb": rss, "stopped": bool(result and result.get("stopped")),
                                           "error": err, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if result.get("stopped"):
        return False
    write_json(cell_dir / "trained.json", {"steps": result["step"], "checkpoint": result.get("checkpoint"),
                                           "last": result.get("last")})
    return True


def evaluate_cell(spec, cell: Cell, cell_dir: Path, device: str = "auto") -> None:
    from masklab.sweep.evaluations import CellContext, resolve

    cfg = read_cell_config(cell_dir)
    model_dir = cfg.train.init_from if cell.untrained else cfg.train.out_dir
    ctx = CellContext(cell_dir, model_dir, cfg, spec, device)
    for name in missing_evals(cell_dir, list(spec.evaluations)):
        t0 = time.time()
        metrics = resolve(name)(ctx)
        write_json(cell_dir / f"eval_{name}.json", {"evaluation": name, "metrics": metrics,
                                                    "seconds": time.time() - t0})
        log.info("%s: %s %s", cell.name, name, {k: round(v, 4) for k, v in metrics.items()})


def run_cell(sweep_dir: Path, cell_hash: str, train: bool = True, evaluate: bool = True, threads: int = 0) -> int:
    """The `sweep-cell` entry point. -> exit code (0: done or cleanly stopped)."""
    from masklab.sweep.spec import load_spec

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    sweep_dir = Path(sweep_dir)
    _, cells = load_plan(sweep_dir)
    cell = next((c for c in cells if c.hash == cell_hash), None)
    if cell is None:
        raise MaskLabError(f"{sweep_dir}: no cell {cell_hash} in plan.json")
    spec = load_spec(sweep_dir / "spec.yaml")
    d = cell.dir(sweep_dir)
    if train and not train_cell(cell, d):
        return 0  # stopped (pre-emption / scancel): the requeued job resumes it
    if evaluate:
        if not is_trained(d):
            raise MaskLabError(f"cell {cell.name} ({cell_hash}) has not finished training: nothing to evaluate")
        evaluate_cell(spec, cell, d)
    return 0
