"""The gpu tests run compiled kernels: with CUDA present, the Triton interpreter must be off (before, the
shared conftests forced TRITON_INTERPRET=1 and one bf16 case took a minute in the interpreter)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _interpreter_off():
    if torch.cuda.is_available():
        from masklab.kernels.dispatch import triton_interpreting

        assert not triton_interpreting(), ("TRITON_INTERPRET is on: the gpu tests would run Triton's CPU "
                                           "interpreter; run them with MASKLAB_GPU_RUN=1 (benchmarks/gpu_first.sh)")
