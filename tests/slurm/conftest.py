"""The `slurm` marker (registered here: the lead owns pytest.ini) and the DeepSpeed skip rule."""
import pytest

from tests.distributed.conftest import CI, _deepspeed_missing


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: runs on a real local Slurm cluster (slurm/local_cluster.sh)")


@pytest.fixture(scope="session")
def need_deepspeed():
    why = _deepspeed_missing()
    if why:
        pytest.fail(f"CI=true: {why}") if CI else pytest.skip(why)
