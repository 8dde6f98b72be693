"""Kernels: Triton implementations, their PyTorch references, one dispatch point.

Public: varlen_attention, masked_token_loss, insert_masks, gather_rows, scatter_rows,
pad_input/unpad_input, set_backend/get_backend, resolve (all in `ops` / `dispatch`).
Loaded on first use, so that importing a submodule (the gpu-check CLI) does not import torch.
"""
from __future__ import annotations

from masklab.lazy import lazy_exports

_EXPORTS = {
    "varlen_attention": "ops", "masked_token_loss": "ops", "insert_masks": "ops", "gather_rows": "ops",
    "scatter_rows": "ops", "unpad_input": "ops", "pad_input": "ops",
    "set_backend": "dispatch", "get_backend": "dispatch", "resolve": "dispatch",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
