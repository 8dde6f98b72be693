"""The GLUE recipe: per-task hyper-parameters as a structured OmegaConf config (struct mode: a
mistyped key in a recipe file is an error naming it). Defaults and their sources are in
`configs/glue/default.yaml`; `--recipe FILE` replaces it, `--set KEY=VALUE` overrides one value."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from masklab.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[3] / "configs" / "glue" / "default.yaml"


@dataclass
class TaskRecipe:
    lr: float = 2e-5
    weight_decay: float = 0.01
    epochs: float = 3
    batch_size: int = 32


@dataclass
class Recipe:
    seeds: List[int] = field(default_factory=lambda: [19, 8364, 717])
    max_length: int = 128
    warmup_ratio: float = 0.06
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    mnli_start: bool = False
    tasks: Dict[str, TaskRecipe] = field(default_factory=dict)
    custom: TaskRecipe = field(default_factory=TaskRecipe)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[Recipe, str]:
    """-> (Recipe, the file it came from). Overrides are OmegaConf dotlist entries (tasks.rte.lr=2e-5)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    p = Path(path) if path else DEFAULT
    if not p.is_file():
        raise ConfigError(f"GLUE recipe {p} not found")
    try:
        base = OmegaConf.structured(Recipe)
        cfg = OmegaConf.merge(base, OmegaConf.load(p), OmegaConf.from_dotlist(list(overrides or [])))
        r: Recipe = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"GLUE recipe {p}: {str(e).splitlines()[0]}") from None
    bad = [f"{n}.{k}={v}" for n, t in {**r.tasks, "custom": r.custom}.items()
           for k, v in (("lr", t.lr), ("epochs", t.epochs), ("batch_size", t.batch_size)) if not v > 0]
    if bad or r.max_length < 8 or not r.seeds or not 0 <= r.warmup_ratio < 1:
        raise ConfigError(f"GLUE recipe {p}: invalid values {bad or [r.max_length, r.seeds, r.warmup_ratio]}")
    return r, str(p)
