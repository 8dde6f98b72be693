import shutil

import pytest


@pytest.fixture
def data_copy(prepared_data, tmp_path):
    """A private copy of the shared corpus (mtimes kept, as `cp -p` / copytree do) that a test may damage."""
    out = tmp_path / "data"
    shutil.copytree(prepared_data, out, ignore=shutil.ignore_patterns("index"))
    return out
