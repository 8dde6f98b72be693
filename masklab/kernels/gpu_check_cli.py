"""`masklab gpu-check`: compile every Triton kernel config for H100/A100 offline (see kernels.gpu_check)."""
from __future__ import annotations


def _gpu_check(args) -> int:
    from masklab.kernels.gpu_check import _run

    return _run(args)


def register(sub) -> None:
    from masklab.kernels.gpu_check import add_args

    p = sub.add_parser("gpu-check", help="compile every Triton kernel config for sm_90/sm_80; report registers, spills")
    add_args(p)
    p.set_defaults(func=_gpu_check)
