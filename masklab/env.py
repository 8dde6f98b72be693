"""`masklab env`: versions, devices and kernel backends, like `ds_report`."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import shutil


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def report() -> list[tuple[str, str]]:
    import torch

    from masklab.kernels import dispatch

    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for d in ("masklab", "torch", "triton", "transformers", "tokenizers", "datasets", "omegaconf", "safetensors",
              "deepspeed", "flash-attn", "scikit-learn", "xgboost", "xgboost-cpu", "numpy"):
        rows.append((d, _version(d)))
    rows.append(("cuda available", str(torch.cuda.is_available())))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"))
    rows.append(("cpu threads", str(torch.get_num_threads())))
    rows.append(("backend torch", "available (reference kernels)"))
    if not dispatch.triton_available():
        tri = "unavailable: triton not installed"
    elif torch.cuda.is_available():
        tri = "available (CUDA)"
    elif dispatch.triton_interpreting():
        tri = "available through the interpreter (TRITON_INTERPRET=1; slow, for tests)"
    else:
        tri = "installed; needs CUDA, or TRITON_INTERPRET=1 for the CPU interpreter"
    rows.append(("backend triton", tri))
    fa = "available" if dispatch.flash_attn_available() and torch.cuda.is_available() else (
        "installed, needs CUDA" if dispatch.flash_attn_available() else "not installed (pip install masklab[flash-attn])")
    rows.append(("backend flash_attn", fa))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows.append(("auto backend (attention)", dispatch.resolve("varlen_attention", dev, "auto")))
    rows.append(("ptxas (gpu-check)", shutil.which("ptxas") or _bundled_ptxas()))
    rows.append(("slurm", shutil.which("sbatch") or "not installed"))
    return rows


def _bundled_ptxas() -> str:
    try:
        tri = importlib.import_module("triton")
        from pathlib import Path

        p = Path(tri.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        return str(p) if p.exists() else "not found"
    except ImportError:
        return "not found"


def _env(args) -> int:
    rows = report()
    width = max(len(k) for k, _ in rows)
    print("MaskLab environment")
    print("-" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("env", help="report versions, devices and available kernel backends")
    p.set_defaults(func=_env)
