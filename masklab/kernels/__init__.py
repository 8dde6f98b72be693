"""Kernels: Triton implementations, their PyTorch references, one dispatch point.

Public: varlen_attention, masked_token_loss, insert_masks, gather_rows, scatter_rows,
pad_input/unpad_input, set_backend/get_backend, resolve (all in `ops` / `dispatch`).
Loaded on first use, so that importing a submodule (the gpu-check CLI) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "varlen_attention": "ops", "masked_token_loss": "ops", "insert_masks": "ops", "gather_rows": "ops",
    "scatter_rows": "ops", "unpad_input": "ops", "pad_input": "ops",
    "set_backend": "dispatch", "get_backend": "dispatch", "resolve": "dispatch",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:  # cached, so later lookups (every op call in a model) are plain attributes
        value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
