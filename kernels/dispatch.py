"""The one place that picks a kernel backend per call.

`auto` is Triton on CUDA tensors, the PyTorch reference otherwise (and `flash_attn` for
attention when that package is installed and the tensors are on CUDA). Every choice is
logged once per (op, backend); asking for a backend that cannot run is an error.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from typing import Callable, Optional

import torch

log = logging.getLogger("masklab.kernels")

BACKENDS = ("auto", "triton", "flash_attn", "torch")
OPS = ("varlen_attention", "masked_token_loss", "insert_masks", "gather_rows", "scatter_rows")
_configured = "auto"
_logged: set[tuple[str, str]] = set()


def set_backend(name: str) -> None:
    """Set the process-wide default (config `kernels.backend`)."""
    global _configured
    if name not in BACKENDS:
        raise ValueError(f"kernels.backend='{name}' is not one of {', '.join(BACKENDS)}")
    _configured = name


def get_backend() -> str:
    return _configured


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _check_triton(device: torch.device) -> None:
    if not triton_available():
        raise RuntimeError("kernels.backend=triton, but the `triton` package is not installed (pip install triton)")
    if device.type != "cuda" and not triton_interpreting():
        raise RuntimeError(
            "kernels.backend=triton needs CUDA tensors; on CPU set TRITON_INTERPRET=1 (before importing masklab) "
            "to run the kernels in Triton's interpreter, or use kernels.backend=torch")


def resolve(op: str, device: torch.device, override: Optional[str] = None) -> str:
    name = override or _configured
    if name not in BACKENDS:
        raise ValueError(f"backend='{name}' is not one of {', '.join(BACKENDS)}")
    if name == "auto":
        if device.type == "cuda" and op == "varlen_attention" and flash_attn_available():
            name = "flash_attn"
        elif device.type == "cuda" and triton_available():
            name = "triton"
        else:
            name = "torch"
    elif name == "flash_attn":
        if op != "varlen_attention":
            name = "triton" if device.type == "cuda" and triton_available() else "torch"
        elif not flash_attn_available():
            raise RuntimeError("kernels.backend=flash_attn, but flash_attn is not installed (pip install masklab[flash-attn])")
        elif device.type != "cuda":
            raise RuntimeError("kernels.backend=flash_attn needs CUDA tensors")
    if name == "triton":
        _check_triton(device)
    if (op, name) not in _logged:
        _logged.add((op, name))
        log.info("kernel backend for %s: %s (requested %s, device %s)", op, name, override or _configured, device.type)
    return name


_IMPLS = {
    # op -> backend -> "module:function"
    "varlen_attention": {"torch": "masklab.kernels.attention:varlen_attention_torch",
                         "triton": "masklab.kernels.triton_attention:varlen_attention_triton",
                         "flash_attn": "masklab.kernels.attention:varlen_attention_flash"},
    "masked_token_loss": {"torch": "masklab.kernels.mlm_loss:masked_token_loss_torch",
                          "triton": "masklab.kernels.triton_mlm_loss:masked_token_loss_triton"},
    "insert_masks": {"torch": "masklab.kernels.insert:insert_masks_torch",
                     "triton": "masklab.kernels.triton_rows:insert_masks_triton"},
    "gather_rows": {"torch": "masklab.kernels.rows:gather_rows_torch",
                    "triton": "masklab.kernels.triton_rows:gather_rows_triton"},
    "scatter_rows": {"torch": "masklab.kernels.rows:scatter_rows_torch",
                     "triton": "masklab.kernels.triton_rows:scatter_rows_triton"},
}


def implementation(op: str, device: torch.device, override: Optional[str] = None) -> Callable:
    name = resolve(op, device, override)
    target = _IMPLS[op].get(name)
    if target is None:
        raise RuntimeError(f"no {name} implementation of {op}")
    mod, fn = target.split(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"{op}: backend {name} is not available here ({e})") from None
