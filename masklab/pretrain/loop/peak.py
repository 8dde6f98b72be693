"""Utilisation's denominators: a measured matmul peak (probe sized per device) and the spec sheet's.

On CUDA the probe is one 8192^3 matmul in the training dtype (1.1 TFLOP, ~1 ms on an H100): a 1024^3
one is microseconds of work, dominated by launch and sync, and under-estimated the peak several-fold,
so utilisation could pass 100%. On CPU the cheap 1024^3 probe stays (start-up time matters there;
an 8192^3 fp32 product would take minutes on 2 cores). The spec peak is the vendor's dense (no
sparsity) bf16/fp16 tensor-core figure for known GPU names; fp32 training runs TF32 tensor cores
(train.allow_tf32), half of it. Unknown GPUs and CPUs have no spec peak (None).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

# dense bf16/fp16 tensor-core FLOP/s; the first substring of the device name that matches wins
SPEC_BF16_FLOPS = (("H200", 989.4e12), ("GH200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100 NVL", 835.0e12),
                   ("H100", 989.4e12), ("H800", 989.4e12), ("A100", 312.0e12), ("A800", 312.0e12),
                   ("L40S", 362.1e12), ("L40", 181.0e12), ("A6000", 154.8e12), ("A10", 125.0e12), ("L4", 121.0e12))
CUDA_PROBE = (8192, 5)  # (n, timed repetitions): 8192^3 in the training dtype
CPU_PROBE = (1024, 3)


class Peak(NamedTuple):
    measured: float  # FLOP/s of the probe matmul
    spec: Optional[float]  # the spec sheet's dense peak for this device and dtype, None when unknown
    probe_n: int


def probe_size(device: torch.device) -> tuple[int, int]:
    """(n, reps) of the matmul probe on this device."""
    return CUDA_PROBE if device.type == "cuda" else CPU_PROBE


def spec_peak_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """The spec sheet's dense peak for this device in `dtype` (None: CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in SPEC_BF16_FLOPS:
        if key in name:
            return flops if dtype in (torch.bfloat16, torch.float16) else flops / 2  # fp32: TF32 cores
    return None
