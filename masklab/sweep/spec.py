"""The sweep spec (`masklab sweep SPEC.yaml`): an OmegaConf structured dataclass in struct mode.

    base: configs/smoke_cpu.yaml          # a training config (path, or name under configs/)
    overrides: [data.shards=runs/pydoc]   # applied to every cell, before the variant's
    variants:                             # named override sets ...
      rate15: [masking.rate=0.15]
      rate40: [masking.rate=0.4]
    grid:                                 # ... and/or a grid: every combination is one variant
      masking.unit: [token, span]
    seeds: [0, 1, 2]                      # train.seed of each cell
    compute: {equalise: flops, amount: 0, reference: rate15}
    evaluations: [evaluate, detection]    # after training, per cell (see evaluations.py)
    baseline: rate15                      # `masklab compare`'s default baseline
    executor: {kind: local, parallel: 1}

With both `variants` and `grid`, each named set is crossed with each grid point (name
`set/key=value,...`). A cell is one variant x one seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from masklab.errors import ConfigError

EQUALISE = ("steps", "tokens", "flops", "none")


@dataclass
class ComputeSpec:
    # steps | tokens (real, non-pad tokens seen) | flops (executed, pretrain/loop/flops.py) | none
    # (each variant keeps its own train.max_steps)
    equalise: str = "steps"
    # the budget every variant gets, in the unit of `equalise`; 0: what `reference` spends in its own
    # train.max_steps
    amount: float = 0.0
    reference: str = ""  # a variant name ("" = the first variant)
    estimate_steps: int = 16  # steps whose batches are built to measure tokens / FLOPs per step


@dataclass
class EvaluateSpec:
    """`masklab evaluate`'s settings: MLM loss / accuracy at a fixed 15% token masking and PLL."""
    shards: str = ""  # "" = the cell's data.shards
    split: str = "validation"
    batches: int = 16
    batch_size: int = 32
    pll_sentences: int = 16
    seed: int = 0


@dataclass
class DetectionSpec:
    """Embed bastioncorpus with the cell's encoder, classify, and score across sources
    (benchmarks/detection_cross.py's splits)."""
    classifier: str = "lr"
    pooling: str = "mean"
    max_length: int = 128
    target_fpr: float = 0.05
    splits: List[str] = field(default_factory=lambda: ["channel", "lang"])


@dataclass
class MinimalPairsSpec:
    path: str = ""  # JSONL, one {"good": sentence, "bad": sentence} per line


@dataclass
class GlueSpec:
    """`masklab glue` on each cell's checkpoint (masklab/downstream/glue/sweep.py)."""
    data: str = "hub"  # 'hub' or a directory in the official GLUE layout
    tasks: str = "small"  # as `masklab glue --tasks`
    seeds: List[int] = field(default_factory=lambda: [19])  # fine-tuning seeds (the sweep's seeds vary pretraining)
    max_train: int = 0  # > 0: subsample each training set (the report says so)
    max_eval: int = 0
    max_steps: int = 0


@dataclass
class SlurmSpec:
    partition: str = ""
    time: str = "02:00:00"
    cpus_per_task: int = 2
    mem: str = ""
    max_parallel: int = 0  # the array's %N throttle (0: none)
    extra: List[str] = field(default_factory=list)  # more sbatch options, e.g. ["--account=nlp"]


@dataclass
class ExecutorSpec:
    kind: str = "local"  # local | slurm
    parallel: int = 1  # local: cells at once (each gets cores // parallel torch threads)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass
class SweepSpec:
    name: str = "sweep"
    base: str = ""
    overrides: List[str] = field(default_factory=list)
    variants: Dict[str, List[str]] = field(default_factory=dict)
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0])
    # variants evaluated as they are, without training: their model is train.init_from (continued
    # pretraining's "0 steps" point)
    untrained_variants: List[str] = field(default_factory=list)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    evaluations: List[str] = field(default_factory=lambda: ["evaluate"])
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    minimal_pairs: MinimalPairsSpec = field(default_factory=MinimalPairsSpec)
    glue: GlueSpec = field(default_factory=GlueSpec)
    baseline: str = ""
    level: float = 0.95  # confidence level of `masklab compare`'s intervals and verdicts
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    out_dir: str = ""  # "" = runs/sweeps/<name>
    note: str = ""  # free text copied into the report (what the recipe tests, its scale)


def load_spec(path: str | Path, overrides: Optional[List[str]] = None) -> Any:
    """YAML -> struct-mode SweepSpec (unknown keys and wrong types are one ConfigError)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep spec not found: {p}")
    spec = OmegaConf.structured(SweepSpec)
    OmegaConf.set_struct(spec, True)
    for free in ("variants", "grid"):  # their keys are the user's names
        OmegaConf.set_struct(spec[free], False)
    try:
        spec = OmegaConf.merge(spec, OmegaConf.load(p))
        for ov in overrides or []:
            spec = OmegaConf.merge(spec, OmegaConf.from_dotlist([ov]))
        OmegaConf.resolve(spec)  # ${oc.env:VAR} and friends: a missing variable fails here, in one line
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"sweep spec {p}: " + (f"key '{key}': " if key else "") + str(e).splitlines()[0]) from None
    except Exception as e:  # YAML errors
        raise ConfigError(f"sweep spec {p}: cannot parse ({str(e).splitlines()[0]})") from None
    check_spec(spec, p)
    return spec


def check_spec(spec, p) -> None:
    from masklab.sweep.evaluations import check_evaluations

    if not spec.base:
        raise ConfigError(f"sweep spec {p}: 'base' (a training config) is required")
    if not spec.variants and not spec.grid:
        raise ConfigError(f"sweep spec {p}: give at least one variant ('variants' or 'grid')")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"sweep spec {p}: 'seeds' must be a non-empty list of distinct integers")
    if spec.compute.equalise not in EQUALISE:
        raise ConfigError(f"sweep spec {p}: compute.equalise='{spec.compute.equalise}' is not one of "
                          f"{', '.join(EQUALISE)}")
    if spec.executor.kind not in ("local", "slurm"):
        raise ConfigError(f"sweep spec {p}: executor.kind='{spec.executor.kind}' is not one of local, slurm")
    if spec.executor.parallel < 1:
        raise ConfigError(f"sweep spec {p}: executor.parallel must be >= 1")
    if not 0.5 <= spec.level < 1:
        raise ConfigError(f"sweep spec {p}: level={spec.level} must lie in [0.5, 1)")
    for name in spec.variants:
        if "/" in name or not name.strip():
            raise ConfigError(f"sweep spec {p}: variant name '{name}' must be non-empty and have no '/'")
    check_evaluations(list(spec.evaluations))
    needs_ckpt = sorted({"evaluate", "minimal_pairs"} & set(spec.evaluations))
    if spec.untrained_variants and needs_ckpt:
        raise ConfigError(f"sweep spec {p}: untrained_variants are evaluated on their train.init_from source, which "
                          f"is not a MaskLab run: {', '.join(needs_ckpt)} need one (use detection, or import the "
                          "source with `masklab import` and train from it)")
