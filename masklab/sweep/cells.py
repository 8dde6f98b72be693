"""Variants x seeds -> cells: each a resolved training config in a directory named by its hash.

SWEEP_DIR/
  spec.yaml          the spec as run (resolved)
  plan.json          every cell: variant, seed, overrides, max_steps, per-step compute, hash
  cells/<hash>/      config.yaml (the cell's training config), run/ (train.out_dir: checkpoints,
                     metrics.jsonl), usage.jsonl (one line per training segment: wall, CPU s, peak
                     RSS), trained.json (written once training finished), eval_<name>.json

The hash is the sha256 of the resolved config with train.out_dir blanked (which depends on the
hash) and train.progress / log settings kept: the same variant and seed always map to the same
directory, so a rerun finds its finished cells and resumes interrupted ones (train.resume=auto).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from masklab.config import from_yaml_text, load_config, to_yaml
from masklab.errors import ConfigError

log = logging.getLogger("masklab.sweep")


@dataclass
class Cell:
    variant: str
    seed: int
    overrides: list
    hash: str
    max_steps: int
    tokens_per_step: float = 0.0
    flops_per_step: float = 0.0
    untrained: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed}"

    def dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / "cells" / self.hash


def variants(spec) -> list[tuple[str, list[str]]]:
    """-> [(name, overrides)]: named sets, each crossed with every grid point."""
    named = [(k, list(v)) for k, v in spec.variants.items()] or [("", [])]
    grid_keys = list(spec.grid)
    points = list(itertools.product(*[list(spec.grid[k]) for k in grid_keys])) if grid_keys else [()]
    out = []
    for (name, ovs), point in itertools.product(named, points):
        g = [f"{k}={v}" for k, v in zip(grid_keys, point)]
        label = "/".join(x for x in (name, ",".join(g)) if x)
        out.append((label, ovs + g))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep variants have duplicate names: {names}")
    return out


def config_hash(cfg) -> str:
    c = OmegaConf.merge(cfg, {"train": {"out_dir": ""}})
    return hashlib.sha256(to_yaml(c).encode()).hexdigest()[:12]


def cell_config(spec, overrides: list, seed: int, max_steps: Optional[int] = None):
    ovs = [*spec.overrides, *overrides, f"train.seed={seed}"]
    if max_steps is not None:
        ovs.append(f"train.max_steps={max_steps}")
    return load_config(spec.base, ovs)


def plan_cells(spec, sweep_dir: Path) -> list[Cell]:
    """Resolve every cell (its max_steps for equal compute) and write plan.json. Reuses plan.json
    when the spec is unchanged (the estimate builds batches: a rerun should not pay it again)."""
    from masklab.sweep.compute import per_unit, steps_for

    sweep_dir = Path(sweep_dir)
    spec_text = OmegaConf.to_yaml(spec, resolve=True)
    plan_file = sweep_dir / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old.get("spec") == spec_text:
            return [Cell(**c) for c in old["cells"]]
    vs = variants(spec)
    c = spec.compute
    untrained = set(spec.untrained_variants)
    unknown = untrained - {n for n, _ in vs}
    if unknown:
        raise ConfigError(f"untrained_variants {sorted(unknown)} name no variant of {[n for n, _ in vs]}")
    amount = float(c.amount)
    if c.equalise != "none" and amount <= 0:
        ref = c.reference or vs[0][0]
        ref_ovs = dict(vs).get(ref)
        if ref_ovs is None:
            raise ConfigError(f"compute.reference='{ref}' is not a variant ({', '.join(n for n, _ in vs)})")
        rcfg = cell_config(spec, ref_ovs, spec.seeds[0])
        _, p = steps_for(rcfg, "steps", rcfg.train.max_steps, c.estimate_steps)
        amount = rcfg.train.max_steps * per_unit(p, c.equalise)
        log.info("compute: %s spends %.4g %s in its %d steps: every variant gets that", ref, amount, c.equalise,
                 rcfg.train.max_steps)
    cells = []
    for name, ovs in vs:
        for seed in spec.seeds:
            cfg = cell_config(spec, ovs, seed)
            if name in untrained:
                steps, p = cfg.train.max_steps, None
            elif c.equalise == "none":
                steps, p = steps_for(cfg, "steps", cfg.train.max_steps, c.estimate_steps)
            else:
                steps, p = steps_for(cfg, c.equalise, amount, c.estimate_steps)
            cfg = cell_config(spec, ovs, seed, steps)
            cells.append(Cell(name, seed, ovs, config_hash(cfg), steps, p.tokens if p else 0.0,
                              p.flops if p else 0.0, name in untrained, {"sweep": spec.name}))
            log.info("cell %-28s seed %d: %d steps (%.3g tokens, %.3g FLOPs per step)", name, seed, steps,
                     p.tokens if p else 0, p.flops if p else 0)
    if len({x.hash for x in cells}) != len(cells):
        raise ConfigError("two cells resolve to the same config (a variant that changes nothing?)")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "spec.yaml").write_text(spec_text)
    plan = {"spec": spec_text, "equalise": c.equalise, "amount": amount, "cells": [asdict(x) for x in cells]}
    tmp = plan_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(plan_file)
    return cells


def write_cell_config(spec, cell: Cell, sweep_dir: Path) -> Path:
    """cells/<hash>/config.yaml: the training config with train.out_dir = cells/<hash>/run."""
    d = cell.dir(sweep_dir)
    d.mkdir(parents=True, exist_ok=True)
    f = d / "config.yaml"
    if not f.is_file():
        cfg = cell_config(spec, cell.overrides, cell.seed, cell.max_steps)
        if config_hash(cfg) != cell.hash:
            raise ConfigError(f"cell {cell.name}: its config no longer hashes to {cell.hash} (the base config or a "
                              "file it composes changed since the plan): use a new sweep directory")
        cfg = OmegaConf.merge(cfg, {"train": {"out_dir": str((d / "run").resolve())}})
        tmp = f.with_suffix(".tmp")
        tmp.write_text(to_yaml(cfg))
        tmp.replace(f)
        (d / "cell.json").write_text(json.dumps(asdict(cell), indent=1))
    return f


def read_cell_config(cell_dir: Path):
    return from_yaml_text((Path(cell_dir) / "config.yaml").read_text(), str(Path(cell_dir) / "config.yaml"))


def load_plan(sweep_dir: Path) -> tuple[dict, list[Cell]]:
    f = Path(sweep_dir) / "plan.json"
    if not f.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no plan.json): run `masklab sweep` first")
    plan = json.loads(f.read_text())
    return plan, [Cell(**c) for c in plan["cells"]]
