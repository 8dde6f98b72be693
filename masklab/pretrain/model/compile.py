"""Device set-up of a built model: TF32 for fp32 matmuls on CUDA, `torch.compile` of the encoder layers.

`train.compile` (None = on for CUDA, off for CPU) compiles each encoder layer in place
(`nn.Module.compile`: parameter names and checkpoints are unchanged). Inside a layer the attention
kernel is one opaque `masklab::varlen_attention` custom op (kernels/custom_ops.py), so the layer is a
single graph and inductor fuses the bias / GELU / GeGLU / LayerNorm / RoPE glue around the GEMMs.
The embeddings, late mask insertion and the fused MLM loss stay eager (the loss is already fused).
`train.allow_tf32` (default true) lets fp32 matmuls and convolutions on CUDA use TF32 tensor cores
(10-bit mantissa products, fp32 accumulation); bf16 autocast training is unaffected.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def compile_enabled(setting: Optional[bool], device: torch.device) -> bool:
    return device.type == "cuda" if setting is None else bool(setting)


def compile_layers(model: nn.Module, fullgraph: bool = False) -> nn.Module:
    """Compile every module of `model.layers` in place (fullgraph: a graph break is an error, for tests)."""
    for layer in model.layers:
        layer.compile(fullgraph=fullgraph)
    return model


def prepare_for_device(model: nn.Module, train_cfg, device: torch.device) -> nn.Module:
    """Apply train.allow_tf32 (CUDA) and train.compile to a model already moved to `device`."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = train_cfg.allow_tf32
        torch.backends.cudnn.allow_tf32 = train_cfg.allow_tf32
    if compile_enabled(train_cfg.compile, device):
        compile_layers(model)
    return model
