"""Pretraining: the batch contract, model presets, masking, training loop, checkpoints, HF I/O.

Public: UnpaddedBatch, build_model, train, load_pretrained, export_hf, import_hf, resolve_checkpoint.
Loaded on first use, so that the CLI can register `masklab train ...` without importing torch.
"""
from __future__ import annotations

from masklab.lazy import lazy_exports

_EXPORTS = {
    "UnpaddedBatch": "batch", "build_model": "model", "train": "loop.train",
    "load_pretrained": "hf.convert", "export_hf": "hf.convert", "import_hf": "hf.convert",
    "resolve_checkpoint": "hf.convert",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
