"""Markers for the multi-process tests (registered here: the lead owns pytest.ini), and their skip rule:
without DeepSpeed or a C++ compiler (DeepSpeed JIT-builds a CPU comm op) the DeepSpeed cases skip
with the reason, except under CI=true, where they must run."""
import os
import shutil

import pytest

CI = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: starts several processes (torchrun / DeepSpeed, gloo)")


def _deepspeed_missing() -> str:
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # ImportError, or a broken build
        return f"DeepSpeed is not importable ({type(e).__name__}: {e}); pip install --no-build-isolation deepspeed"
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "DeepSpeed on CPU JIT-builds its shm comm op and needs g++"
    return ""


@pytest.fixture(scope="session")
def need_deepspeed():
    why = _deepspeed_missing()
    if why:
        pytest.fail(f"CI=true: {why}") if CI else pytest.skip(why)
