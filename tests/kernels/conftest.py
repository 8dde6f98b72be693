"""Kernel tests run the Triton kernels in Triton's CPU interpreter.

TRITON_INTERPRET is read when `@triton.jit` decorates a function, i.e. when kernels/triton_*.py
is imported: it must be set before any test module imports them (tests/conftest.py may set it
too; this makes the folder self-sufficient when run on its own).
"""
import os

os.environ["TRITON_INTERPRET"] = "1"
