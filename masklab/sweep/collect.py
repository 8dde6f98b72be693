"""Read a sweep directory back: per cell its metrics, compute and curves (for `masklab compare`)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from masklab.sweep.cells import Cell, load_plan


@dataclass
class CellResult:
    cell: Cell
    trained: bool
    metrics: dict = field(default_factory=dict)  # name -> float (evaluations + final val_loss)
    compute: dict = field(default_factory=dict)  # tokens, flops, steps, wall_s, cpu_h, peak_mb
    eval_curve: list = field(default_factory=list)  # [(step, tokens, flops, eval_loss)]
    rate_curve: list = field(default_factory=list)  # [(step, scheduled rate, realised rate)]
    schedule: str = "constant"


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line
    return out


def read_cell(sweep_dir: Path, cell: Cell) -> CellResult:
    d = cell.dir(sweep_dir)
    r = CellResult(cell, (d / "trained.json").is_file())
    eval_s = 0.0
    for f in sorted(d.glob("eval_*.json")):
        e = json.loads(f.read_text())
        r.metrics.update(e.get("metrics", {}))
        eval_s += e.get("seconds", 0.0)
    recs = _records(d / "run" / "metrics.jsonl")
    evals = [x for x in recs if "eval_loss" in x]
    r.eval_curve = [(x["step"], x.get("tokens_seen", math.nan), x.get("flops_seen", math.nan), x["eval_loss"])
                    for x in evals]
    if evals and evals[-1]["step"] > 0:
        r.metrics.setdefault("val_loss", float(evals[-1]["eval_loss"]))
    logs = [x for x in recs if "loss" in x and "mask_rate" in x]
    r.rate_curve = [(x["step"], x["mask_rate"], x.get("realised_mask_rate", math.nan)) for x in logs]
    records = _records(d / "usage.jsonl")
    usage = [u for u in records if u.get("event") == "end"]
    last = logs[-1] if logs else {}
    r.compute = {"steps": last.get("step", 0), "tokens": last.get("tokens_seen", math.nan),
                 "flops": last.get("flops_seen", math.nan),
                 "wall_s": sum(u.get("wall_s", 0.0) for u in usage),
                 "cpu_h": sum(u.get("cpu_s", 0.0) for u in usage) / 3600,
                 "peak_mb": max([u.get("peak_rss_mb", 0.0) for u in usage] + [x.get("peak_memory_mb", 0.0) for x in logs]
                                + [0.0]),
                 "eval_s": eval_s, "segments": sum(u.get("event") == "start" for u in records),
                 "segments_without_usage": sum(u.get("event") == "start" for u in records) - len(usage)}
    cfg_file = d / "config.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        r.schedule = str(OmegaConf.load(cfg_file).masking.get("schedule", "constant"))
    return r


def read_sweep(sweep_dir: Path) -> tuple[dict, list[CellResult]]:
    plan, cells = load_plan(sweep_dir)
    return plan, [read_cell(Path(sweep_dir), c) for c in cells]


def by_variant(results: list[CellResult]) -> dict[str, list[CellResult]]:
    out: dict[str, list[CellResult]] = {}
    for r in results:
        out.setdefault(r.cell.variant, []).append(r)
    return out
