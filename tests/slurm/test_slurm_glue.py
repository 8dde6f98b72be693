"""`masklab glue --executor slurm` on the real local cluster: one array element per (task, seed),
a gather job writing the table, and a rerun that submits only the unfinished cells."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.downstream.conftest import tiny_bert_dir, tiny_ckpt  # noqa: F401  (fixtures)
from tests.downstream.glue_fixture import write_glue_dir
from tests.slurm.test_slurm import ROOT, cluster, wait  # noqa: F401

pytestmark = pytest.mark.slurm


def _glue(ckpt, data, out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "MASKLAB_PYTHON": sys.executable}
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "glue", str(ckpt), "--out", str(out), "--data", str(data),
                        "--tasks", "rte,cola", "--seeds", "1,2", "--set", "tasks.rte.epochs=1", "--set",
                        "tasks.cola.epochs=1", "--max-train", "32", "--executor", "slurm",
                        "--sbatch-args", "--partition=debug --time=00:10:00 --cpus-per-task=1 --mem=2G"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_glue_array_gather_and_rerun(cluster, tiny_ckpt, tmp_path):  # noqa: F811
    data = write_glue_dir(tmp_path / "glue", n_train=32, n_dev=16)
    out = tmp_path / "out"
    printed = _glue(tiny_ckpt, data, out)
    assert "submitted 4 cell(s)" in printed
    gather = re.search(r"gather job (\d+)", printed).group(1)
    wait(gather, timeout=600)
    logs = "\n".join(p.read_text()[-800:] for p in (out / ".slurm").glob("*.out"))
    assert (out / "results.md").is_file(), logs
    assert "Average over 2 task(s): rte, cola" in (out / "results.md").read_text(), logs
    assert len(json.loads((out / "results.json").read_text())["tasks"]["cola"]["scores"]) == 2
    (out / "cola" / "seed_2" / "results.json").unlink()  # one cell lost: the rerun submits only it
    printed = _glue(tiny_ckpt, data, out)
    assert "submitted 1 cell(s)" in printed, printed
    wait(re.search(r"gather job (\d+)", printed).group(1), timeout=600)
    assert (out / "cola" / "seed_2" / "results.json").is_file()
