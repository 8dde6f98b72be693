"""Pretraining: the batch contract, model presets, masking, training loop, checkpoints, HF I/O.

Public: UnpaddedBatch, build_model, train, load_pretrained, export_hf, import_hf, resolve_checkpoint.
Loaded on first use, so that the CLI can register `masklab train ...` without importing torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "UnpaddedBatch": "batch", "build_model": "model", "train": "loop.train",
    "load_pretrained": "hf.convert", "export_hf": "hf.convert", "import_hf": "hf.convert",
    "resolve_checkpoint": "hf.convert",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:  # cached, so later lookups (every op call in a model) are plain attributes
        value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
