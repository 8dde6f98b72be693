"""A fine-tuning run's checkpoint: model.safetensors, optimizer.safetensors (AdamW moments per
parameter index), state.json (step, history, settings), best.safetensors (the selected epoch's
weights, with engine.Select only); written as one directory through
`masklab.atomic` (old or complete, never half). Nothing is unpickled when loading."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from masklab.atomic import atomic_dir
from masklab.errors import CheckpointError

# settings a resume must match: anything else would silently continue another run
MUST_MATCH = ("lr", "epochs", "batch_size", "warmup_ratio", "weight_decay", "max_length", "seed", "max_steps")


def save(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict,
         best: Optional[dict] = None) -> None:
    sd = opt.state_dict()
    tensors = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])} for g in sd["param_groups"]]
    with atomic_dir(ckpt) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        (tmp / "optimizer_groups.json").write_text(json.dumps(groups, default=list))
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))


def load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, settings) -> tuple[dict, Optional[dict]]:
    """Restore model + optimizer in place -> (state, best weights or None). A checkpoint of other
    settings is refused by name."""
    state = json.loads((ckpt / "state.json").read_text())
    saved = state.get("settings", {})
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {getattr(settings, k)!r}" for k in MUST_MATCH
            if k in saved and saved[k] != getattr(settings, k)]
    if diff:
        raise CheckpointError(f"{ckpt} was written with other settings ({'; '.join(diff)}); remove it or "
                              "run in another output directory")
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    flat = load_file(str(ckpt / "optimizer.safetensors"))
    groups = json.loads((ckpt / "optimizer_groups.json").read_text())
    per = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        per.setdefault(int(i), {})[name] = v
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": per, "param_groups": groups})
    best = ckpt / "best.safetensors"
    return state, (load_file(str(best)) if best.is_file() else None)


def exclusive(d: Path, what: str, label=None):
    """Context manager: one process at a time in directory `d` (flock on d/.lock, dropped by the
    kernel when the holder dies: pretrain.checkpoint.run_lock). A second process is refused in one
    line naming `label` (default d), `what` it is doing and, where known, the holder's host and pid."""
    import contextlib
    import re

    from masklab.errors import ConfigError, MaskLabError
    from masklab.pretrain.checkpoint.run_lock import RunLock

    @contextlib.contextmanager
    def held():
        try:
            lk = RunLock(d).__enter__()
        except ConfigError as e:
            who = re.search(r"\((host .*?|holder unknown)\)", str(e))
            raise MaskLabError(f"{label or d} is being {what} ({who.group(1) if who else 'holder unknown'}); "
                               "wait for it, or use another --out") from None
        try:
            yield d
        finally:
            lk.__exit__(None, None, None)

    return held()
