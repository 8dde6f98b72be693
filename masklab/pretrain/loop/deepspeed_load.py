"""Read DeepSpeed's checkpoint files without running pickle code.

DeepSpeed saves its engine and ZeRO optimizer state with `torch.save` and reads it back with
`torch.load(weights_only=False)` (its TorchCheckpointEngine and a few direct calls): a crafted
`*.pt` could run arbitrary code. While `weights_only_torch_load()` is active every `torch.load`
runs with `weights_only=True`: the unpickler then builds only tensors, containers, primitive
types and the few DeepSpeed classes its ZeRO-1/2 state really holds (`DEEPSPEED_GLOBALS`,
found by listing the GLOBAL opcodes of fp32 and bf16 ZeRO-1/2 checkpoints of DeepSpeed 0.19).
Anything else is refused, naming the file and the global, and nothing it names is called.

This is the second guard: `DeepSpeedEngine.load_extra` first requires the checkpoint's sha256
manifest to be signed by this run directory's key (or train.trust_checkpoint=true).
"""
from __future__ import annotations

import contextlib
import functools
import pickle
from typing import Iterator

import torch

from masklab.errors import CheckpointError


def deepspeed_globals() -> list:
    """The exact non-torch classes in DeepSpeed's ZeRO-1/2 state (fp32 and bf16)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def weights_only_torch_load() -> Iterator[None]:
    """Within the block, `torch.load` always means `weights_only=True` with DeepSpeed's allow-list;
    a refused file raises CheckpointError (one line: the file and what it tried to load)."""
    original = torch.load

    @functools.wraps(original)
    def safe_load(f, map_location=None, *args, **kwargs):
        kwargs.pop("weights_only", None)  # DeepSpeed passes weights_only=False: never honoured here
        try:
            return original(f, map_location, *args, weights_only=True, **kwargs)
        except pickle.UnpicklingError as e:
            detail = str(e).split("\n")
            reason = next((line.strip() for line in detail if "Unsupported" in line or "GLOBAL" in line), detail[0])
            raise CheckpointError(f"{f}: refused to unpickle DeepSpeed state: {reason} (only tensors, containers and "
                                  "DeepSpeed's own ZeRO state classes are loaded; this file holds something else)"
                                  ) from None

    torch.load = safe_load
    try:
        with torch.serialization.safe_globals(deepspeed_globals()):
            yield
    finally:
        torch.load = original
