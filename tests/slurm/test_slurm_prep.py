"""`masklab prep --executor slurm` on the real local 2-node cluster: the same bytes as one process
(issue 16), and a rerun after a prep that completed resubmits the work rather than skipping it."""
import json
import os
import subprocess
import sys

import pytest

from masklab.data_prep import PrepOptions, prepare
from masklab.data_prep.corpus import pydoc_documents
from tests.data_prep.conftest import tree_bytes, write_mixed_corpus
from tests.slurm.test_slurm import cluster  # noqa: F401  (starts the cluster, or uses a running one)

pytestmark = pytest.mark.slurm
OPTS = dict(vocab_size=1500, chunk_bytes=20_000, shard_tokens=5_000)


def slurm_prep(corpus, out, *extra):
    cmd = [sys.executable, "-m", "masklab.cli", "prep", "--corpus", str(corpus), "--out", str(out),
           "--vocab-size", "1500", "--chunk-bytes", "20000", "--shard-tokens", "5000", "--executor", "slurm",
           "--tasks", "2", "--partition", "debug", "--mem-per-cpu-gb", "1", "--time", "00:10:00", "--wait", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    logs = out.parent / f".{out.name}.logs"
    job_logs = "\n".join(p.read_text()[-1500:] for p in sorted(logs.rglob("*.out"))) if logs.is_dir() else ""
    assert r.returncode == 0, r.stderr[-3000:] + job_logs
    return r


def test_slurm_executor_output_is_byte_identical_to_one_process(cluster, tmp_path):  # noqa: F811
    corpus = write_mixed_corpus((tmp_path / "corpus").mkdir() or tmp_path / "corpus", pydoc_documents()[:1500])
    ref = tmp_path / "ref" / "data"
    prepare(PrepOptions(source=str(corpus), out=str(ref), num_proc=1, **OPTS))
    out = tmp_path / "slurm" / "data"
    slurm_prep(corpus, out)
    assert json.loads((out / "manifest.json").read_text())["units"] >= 6
    assert tree_bytes(out) == tree_bytes(ref)
    # the same command again (--overwrite): the encode and merge tasks' completion markers from
    # the first run must not make Slurm skip the work of this one
    (out / "from_the_first_run").write_text("replaced only by a complete new output")
    slurm_prep(corpus, out, "--overwrite")
    assert not (out / "from_the_first_run").exists() and not (out.parent / ".data.partial").exists()
    assert tree_bytes(out) == tree_bytes(ref)
