"""Kernel tests run the Triton kernels in Triton's CPU interpreter.

TRITON_INTERPRET is read when `@triton.jit` decorates a function, i.e. when kernels/triton_*.py
is imported: it must be set before any test module imports them (tests/conftest.py may set it
too; this makes the folder self-sufficient when run on its own). Not under MASKLAB_GPU_RUN=1 (the
device run of benchmarks/gpu_first.sh), where nothing may switch the interpreter on.
"""
import os

if os.environ.get("MASKLAB_GPU_RUN") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
