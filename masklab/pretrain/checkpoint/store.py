"""Atomic, pickle-free checkpoints.

Layout (docs/architecture.md): <run>/checkpoints/step_00000100/
    model.safetensors       model weights (tied decoder stored once)
    optimizer.safetensors   optimizer tensors, keyed state.<param index>.<name>
    rng.safetensors         torch CPU (+ CUDA) RNG states
    state.json              step, optimizer hyper-params, scheduler, numpy/python RNG, data position, logger step
    config.yaml             the resolved config
    tokenizer/              tokenizer.json (+ info)
    SHA256SUMS.json         sha256 of every file, signed with the run directory's key (integrity.py)
    COMPLETE                written last
The directory is written under a temp name, fsynced and renamed (masklab.atomic); only
directories with COMPLETE count. Loading verifies the hashes and never unpickles.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from masklab.atomic import atomic_dir
from masklab.errors import CheckpointError
from masklab.pretrain.checkpoint.integrity import run_key, verify_manifest, write_manifest

log = logging.getLogger("masklab.checkpoint")
MARKER = "COMPLETE"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(run_dir: Path, warn: bool = True) -> list[Path]:
    """Complete checkpoints, oldest first. Incomplete ones are reported and ignored."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        if _NAME.match(d.name) and (d / MARKER).is_file():
            out.append(d)
        elif warn:
            log.warning("ignoring incomplete checkpoint %s (no %s marker)", d, MARKER)
    return out


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict, dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def non_finite_tensors(tensors: dict) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    state: dict, config_yaml: str, tokenizer_dir: Optional[Path], keep_last: int = 0,
                    extra_dirs: Optional[dict] = None) -> Optional[Path]:
    """Write <run>/checkpoints/step_N atomically (masklab.atomic); prune to the newest `keep_last`
    (0 = keep all). `extra_dirs` {name: dir} (e.g. DeepSpeed's own state, written by every rank)
    are moved in before the manifest and the marker. -> the checkpoint, or None when the weights
    are not finite: a poisoned model is never saved, so it can never push out a good checkpoint."""
    final = checkpoint_dir(run_dir, step)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(weights)
    if bad:
        for d in (extra_dirs or {}).values():
            shutil.rmtree(d, ignore_errors=True)
        log.warning("step %d: not saving a checkpoint: non-finite weights in %s; newest good checkpoint: %s", step,
                    ", ".join(bad[:3]), latest_checkpoint(run_dir))
        return None
    previous = latest_checkpoint(run_dir)
    intact = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    with atomic_dir(final, intact=intact) as tmp:
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt", "preset": getattr(model, "preset", "")})
        meta = dict(state)
        if optimizer is not None:
            tensors, opt_meta = _optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            meta["optimizer"] = opt_meta
        rng_t, rng_m = rng_state()
        save_file(rng_t, str(tmp / "rng.safetensors"))
        meta["rng"] = rng_m
        meta["step"] = step
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        (tmp / "config.yaml").write_text(config_yaml)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        for name, d in (extra_dirs or {}).items():
            shutil.move(str(d), str(tmp / name))
        write_manifest(tmp, run_key(run_dir, create=True))
        (tmp / MARKER).write_text(f"step {step}\n")  # last: fsynced with the rest by atomic_dir
    if keep_last > 0:  # the one just written always stays, whatever sorts after it
        others = [c for c in list_checkpoints(run_dir, warn=False) if c != final]
        for old in others[:max(0, len(others) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def move_aside_after(run_dir: Path, step: int) -> list[Path]:
    """Rolling back to `step`: the abandoned branch's newer checkpoints move to
    <run>/abandoned/<time>/ (kept for inspection, no longer "latest", never pruned)."""
    newer = [c for c in list_checkpoints(run_dir, warn=False) if int(_NAME.match(c.name)[1]) > step]
    if not newer:
        return []
    dest = Path(run_dir) / "abandoned" / time.strftime("%Y%m%dT%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for c in newer:
        os.rename(c, dest / c.name)
    log.warning("rolled back to step %d: moved the newer checkpoints %s to %s", step, [c.name for c in newer], dest)
    return [dest / c.name for c in newer]


def _load_safetensors(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupted checkpoint file {path}: {e}") from None


def load_state(ckpt: Path) -> dict:
    ckpt = Path(ckpt)
    if not (ckpt / MARKER).is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint (no {MARKER} marker)")
    try:
        return json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupted checkpoint state {ckpt / 'state.json'}: {e}") from None


def load_model_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Verified against the checkpoint's sha256 manifest; NaN/Inf weights are an error naming the tensor."""
    verify_manifest(ckpt, only=["model.safetensors"])
    weights = _load_safetensors(Path(ckpt) / "model.safetensors")
    bad = non_finite_tensors(weights)
    if bad:
        raise CheckpointError(f"{ckpt}: non-finite (NaN/Inf) weights in tensor {bad[0]}"
                              + (f" and {len(bad) - 1} more" if len(bad) > 1 else "") + "; use an earlier checkpoint")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatches: the checkpoint belongs to another architecture
        raise CheckpointError(f"{ckpt}: weights do not fit the model ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    restore_rng: bool = True) -> dict:
    """Restore model (+ optimizer, RNG) in place; -> the saved state dict (step, data position, ...).
    Every file is first checked against the checkpoint's sha256 manifest."""
    state = load_state(ckpt)
    verify_manifest(ckpt)
    load_model_weights(model, ckpt)
    if optimizer is not None and "optimizer" in state:
        _restore_optimizer(optimizer, _load_safetensors(Path(ckpt) / "optimizer.safetensors"), state["optimizer"])
    if restore_rng:
        set_rng_state(_load_safetensors(Path(ckpt) / "rng.safetensors"), state["rng"])
    return state
