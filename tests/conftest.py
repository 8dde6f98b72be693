"""Shared test setup. Environment first: Triton reads TRITON_INTERPRET when kernels are decorated.
On the GPU machine `benchmarks/gpu_first.sh` sets MASKLAB_GPU_RUN=1: the kernels run compiled there
(tests/gpu/conftest.py asserts it), and the interpreter-only folders are not run."""
import os

if os.environ.get("MASKLAB_GPU_RUN") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
        "data.seq_len=64", "data.batch_size=8", "train.progress=false", "train.tensorboard=false",
        "train.log_every=1", "train.device=cpu"]


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A small prepared corpus (600 pydoc paragraphs, WordPiece 2000), shared read-only."""
    from masklab.data_prep import PrepOptions, prepare

    out = tmp_path_factory.mktemp("data") / "pydoc600"
    prepare(PrepOptions(source="pydoc", out=str(out), max_documents=600, vocab_size=2000))
    return out


@pytest.fixture
def tiny_overrides(prepared_data, tmp_path):
    """Dotlist overrides for a 2-layer x 64 model on the shared corpus, writing into tmp_path."""
    return TINY + [f"data.shards={prepared_data}", f"train.out_dir={tmp_path / 'run'}"]
