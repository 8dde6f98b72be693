"""The sweep's `glue` evaluation: fine-tune a cell's checkpoint on the spec's GLUE tasks and return
one number per task plus their average (`masklab compare` then gives intervals over the sweep's seeds)."""
from __future__ import annotations

from typing import Dict


def evaluate(ctx) -> Dict[str, float]:
    """ctx: masklab.sweep.evaluations.CellContext -> {"glue_<task>": median score, "glue_average": ...}.
    Results live in <cell>/eval/glue, so a rerun skips finished (task, seed) cells."""
    from masklab.downstream.glue.run import Job, run
    from masklab.downstream.glue.tasks import parse_tasks

    g = ctx.spec.glue
    job = Job(model=str(ctx.model_dir), out=str(ctx.cell_dir / "eval" / "glue"), tasks=parse_tasks(g.tasks),
              data=g.data, seeds=list(g.seeds) or None, max_train=g.max_train, max_eval=g.max_eval,
              max_steps=g.max_steps, device=_device(ctx.device), progress=False)
    summary = run(job)
    out = {f"glue_{t}": float(v["median"]) for t, v in summary["tasks"].items() if v["median"] is not None}
    if summary["average"] is not None:
        out["glue_average"] = float(summary["average"])
    return out


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
