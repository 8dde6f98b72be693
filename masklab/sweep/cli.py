"""`masklab sweep SPEC.yaml`, `masklab compare SWEEP_DIR` and the internal `masklab sweep-cell`."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.sweep")


def _sweep(args: argparse.Namespace) -> int:
    from masklab.sweep.cells import plan_cells, write_cell_config
    from masklab.sweep.executors import run_local, submit_slurm, wait_slurm
    from masklab.sweep.spec import load_spec

    overrides = list(args.set or [])
    if args.executor:
        overrides.append(f"executor.kind={args.executor}")
    if args.parallel:
        overrides.append(f"executor.parallel={args.parallel}")
    spec = load_spec(args.spec, overrides)
    sweep_dir = Path(args.out or spec.out_dir or f"runs/sweeps/{spec.name}")
    cells = plan_cells(spec, sweep_dir)
    for c in cells:
        write_cell_config(spec, c, sweep_dir)
    log.info("sweep %s: %d cells in %s", spec.name, len(cells), sweep_dir)
    if args.plan_only:
        print(json.dumps({"sweep_dir": str(sweep_dir), "cells": [
            {"variant": c.variant, "seed": c.seed, "hash": c.hash, "max_steps": c.max_steps} for c in cells]}, indent=1))
        return 0
    if spec.executor.kind == "slurm":
        jobs = submit_slurm(spec, sweep_dir, cells)
        print(json.dumps({"sweep_dir": str(sweep_dir), **jobs}))
        if args.wait:
            wait_slurm(jobs)
        return 0
    res = run_local(spec, sweep_dir, cells, spec.executor.parallel)
    print(json.dumps({"sweep_dir": str(sweep_dir), **{k: len(v) for k, v in res.items()}}))
    if res["failed"]:
        raise MaskLabError(f"{len(res['failed'])} cell(s) failed ({', '.join(res['failed'])}): see "
                           f"{sweep_dir}/cells/<hash>/log.txt; a rerun skips the finished ones")
    if args.compare:
        from masklab.sweep.report import compare

        print(json.dumps(compare(sweep_dir)))
    return 0


def _cell(args: argparse.Namespace) -> int:
    from masklab.sweep.run_cell import run_cell

    return run_cell(Path(args.sweep_dir), args.cell, train=not args.eval_only, evaluate=not args.train_only,
                    threads=args.threads)


def _compare(args: argparse.Namespace) -> int:
    from masklab.sweep.report import compare

    print(json.dumps(compare(args.sweep_dir, args.baseline, args.level, args.out)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train and evaluate variants x seeds at equal compute (local or Slurm array)",
                       description="Run a sweep spec (masklab/sweep/spec.py): every variant x seed is a cell in "
                                   "SWEEP_DIR/cells/<config hash>; a rerun skips finished cells and resumes "
                                   "interrupted ones.")
    p.add_argument("spec", help="sweep spec YAML (e.g. configs/sweeps/wettig_rate.yaml)")
    p.add_argument("--out", help="sweep directory (default: the spec's out_dir, else runs/sweeps/<name>)")
    p.add_argument("--executor", choices=["local", "slurm"], help="override executor.kind")
    p.add_argument("--parallel", type=int, help="local: cells at once (override executor.parallel)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec key (repeatable), e.g. "
                   "--set seeds=[0] --set 'overrides=[train.max_steps=20]'")
    p.add_argument("--plan-only", action="store_true", help="resolve the cells and their steps, print, train nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait until both arrays have left the queue")
    p.add_argument("--compare", action="store_true", help="local: run `masklab compare` at the end")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("sweep-cell", help="(internal) train and/or evaluate one cell of a sweep")
    p.add_argument("sweep_dir")
    p.add_argument("cell", help="the cell's config hash")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--train-only", action="store_true")
    g.add_argument("--eval-only", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=_cell)

    p = sub.add_parser("compare", help="compare a sweep's variants: intervals over seeds, verdicts, plots, report",
                       description="Writes SWEEP_DIR/report/{report.md, report.html, *.png, summary.json}.")
    p.add_argument("sweep_dir")
    p.add_argument("--baseline", help="variant the others are compared with (default: the spec's, else the first)")
    p.add_argument("--level", type=float, help="confidence level (default: the spec's level, 0.95)")
    p.add_argument("--out", help="report directory (default SWEEP_DIR/report)")
    p.set_defaults(func=_compare)
