"""The one place that picks a kernel backend, per call, from (op, device, dtype, head dim, window, positions).

`auto` on CUDA: attention goes to `flash_attn` when it is installed and can take the call (fp16/bf16,
sm_80+, no window over `positions`: its window is over row offsets), else to Triton; the other ops go
to Triton (sm_80+: the configs `masklab gpu-check` proves); everything else gets the PyTorch reference.
Each distinct key is logged once with the choice and, when `auto` fell back from a faster backend, the
reason. An explicitly requested backend that cannot take the call is an error naming why.

Precedence: a per-call (or per-model) `triton` / `flash_attn` / `torch` wins; a per-call `auto` (every
model's default) defers to the process-wide `set_backend`, so `set_backend("triton")` reaches a model
built with `backend="auto"` (before, the model's "auto" silently beat it).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Callable, NamedTuple, Optional

import torch

log = logging.getLogger("masklab.kernels")

BACKENDS = ("auto", "triton", "flash_attn", "torch")
OPS = ("varlen_attention", "masked_token_loss", "insert_masks", "gather_rows", "scatter_rows")
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256
MIN_CAPABILITY = (8, 0)  # flash_attn 2 and our Triton configs (bf16 tl.dot) need Ampere or newer
_configured = "auto"
_logged: set["CallKey"] = set()


class CallKey(NamedTuple):
    """What decides the backend of one call; logged once per distinct value."""
    op: str
    device: str
    dtype: Optional[torch.dtype]
    head_dim: Optional[int]
    window: Optional[int]
    requested: str
    positions: bool = False  # the window is over true positions (varlen_attention(positions=...))


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


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def _flash_refusal(key: CallKey, device: torch.device) -> Optional[str]:
    """Why flash_attn cannot take this call (None: it can)."""
    if not flash_attn_available():
        return "flash_attn is not installed (pip install masklab[flash-attn])"
    if key.device != "cuda":
        return "flash_attn needs CUDA tensors"
    if key.dtype is not None and key.dtype not in FLASH_DTYPES:
        return f"flash_attn takes fp16/bf16 only, got {key.dtype}"
    if key.positions and key.window is not None:
        return "flash_attn's window is over row offsets, this call's is over true positions (rows removed)"
    if key.head_dim is not None and key.head_dim > FLASH_MAX_HEAD_DIM:
        return f"flash_attn takes head_dim <= {FLASH_MAX_HEAD_DIM}, got {key.head_dim}"
    if cuda_capability(device) < MIN_CAPABILITY:
        return f"flash_attn needs sm_80+, this GPU is sm_{''.join(map(str, cuda_capability(device)))}"
    return None


def _triton_refusal(key: CallKey, device: torch.device) -> Optional[str]:
    """Why the Triton kernels cannot take this call (None: they can)."""
    if not triton_available():
        return "the `triton` package is not installed (pip install triton)"
    if key.device != "cuda":
        if triton_interpreting():
            return None
        return ("Triton needs CUDA tensors; on CPU set TRITON_INTERPRET=1 (before importing masklab) to run the "
                "kernels in Triton's interpreter, or use kernels.backend=torch")
    if cuda_capability(device) < MIN_CAPABILITY:
        return f"the Triton configs are built for sm_80+, this GPU is sm_{''.join(map(str, cuda_capability(device)))}"
    return None


def _choose(key: CallKey, device: torch.device) -> tuple[str, str]:
    """-> (backend, why). Raises RuntimeError when an explicit request cannot be met."""
    requested = key.requested
    if requested == "flash_attn" and key.op != "varlen_attention":
        requested = "auto"  # flash_attn has attention only: the other ops follow auto
    if requested in ("flash_attn", "triton"):
        refusal = (_flash_refusal if requested == "flash_attn" else _triton_refusal)(key, device)
        if refusal:
            raise RuntimeError(f"kernels.backend={requested} cannot run {key.op}: {refusal}")
        return requested, "requested"
    if requested == "torch":
        return "torch", "requested"
    if key.device != "cuda":
        return "torch", "auto on non-CUDA tensors"
    reasons = []
    if key.op == "varlen_attention":
        refusal = _flash_refusal(key, device)
        if refusal is None:
            return "flash_attn", "auto"
        reasons.append(refusal)
    refusal = _triton_refusal(key, device)
    if refusal is None:
        return "triton", "auto" + (f", fallback: {reasons[0]}" if reasons else "")
    return "torch", "auto, fallback: " + "; ".join(reasons + [refusal])


# torch.compile runs the choice (and its one log line) in Python at trace time and bakes the result into
# the graph: a logging call traced by dynamo would break the graph.
@torch.compiler.assume_constant_result
def resolve(op: str, device: torch.device, override: Optional[str] = None, *, dtype: Optional[torch.dtype] = None,
            head_dim: Optional[int] = None, window: Optional[int] = None, positions: bool = False) -> str:
    """The backend for one call of `op` on `device` (dtype / head_dim / window / positions: what the call
    carries; positions: the window is over true positions)."""
    name = override if override not in (None, "auto") else _configured
    if name not in BACKENDS:
        raise ValueError(f"backend='{name}' is not one of {', '.join(BACKENDS)}")
    if op not in OPS:
        raise ValueError(f"unknown kernel op '{op}': one of {', '.join(OPS)}")
    key = CallKey(op, device.type, dtype, head_dim, window, name, bool(positions and window is not None))
    chosen, why = _choose(key, device)
    if key not in _logged:
        _logged.add(key)
        fell_back = "fallback" in why
        log.log(logging.WARNING if fell_back else logging.INFO,
                "kernel backend for %s (device %s, dtype %s, head_dim %s, window %s): %s (requested %s; %s)",
                op, key.device, str(dtype).replace("torch.", ""), head_dim,
                f"{window} over positions" if key.positions else window, chosen, name, why)
    return chosen


# One loader per op: ordinary imports, done lazily so torch-only installs never import triton.
def _varlen_attention(backend: str) -> Callable:
    if backend == "triton":
        from masklab.kernels.triton_attention import varlen_attention_triton
        return varlen_attention_triton
    if backend == "flash_attn":
        from masklab.kernels.attention import varlen_attention_flash
        return varlen_attention_flash
    from masklab.kernels.attention import varlen_attention_torch
    return varlen_attention_torch


def _masked_token_loss(backend: str) -> Callable:
    if backend == "triton":
        from masklab.kernels.triton_mlm_loss import masked_token_loss_triton
        return masked_token_loss_triton
    from masklab.kernels.mlm_loss import masked_token_loss_torch
    return masked_token_loss_torch


def _insert_masks(backend: str) -> Callable:
    if backend == "triton":
        from masklab.kernels.triton_rows import insert_masks_triton
        return insert_masks_triton
    from masklab.kernels.insert import insert_masks_torch
    return insert_masks_torch


def _gather_rows(backend: str) -> Callable:
    if backend == "triton":
        from masklab.kernels.triton_rows import gather_rows_triton
        return gather_rows_triton
    from masklab.kernels.rows import gather_rows_torch
    return gather_rows_torch


def _scatter_rows(backend: str) -> Callable:
    if backend == "triton":
        from masklab.kernels.triton_rows import scatter_rows_triton
        return scatter_rows_triton
    from masklab.kernels.rows import scatter_rows_torch
    return scatter_rows_torch


_LOADERS = {"varlen_attention": _varlen_attention, "masked_token_loss": _masked_token_loss,
            "insert_masks": _insert_masks, "gather_rows": _gather_rows, "scatter_rows": _scatter_rows}


def load(op: str, backend: str) -> Callable:
    """The `backend` implementation of `op` (a name `resolve` returned)."""
    try:
        return _LOADERS[op](backend)
    except ImportError as e:
        raise RuntimeError(f"{op}: backend {backend} is not available here ({e})") from None


def implementation(op: str, device: torch.device, override: Optional[str] = None, **key) -> Callable:
    """The function for one call (key: dtype / head_dim / window / positions, as in `resolve`)."""
    return load(op, resolve(op, device, override, **key))
