"""`masklab sweep` on the local Slurm cluster: 1 variant x 2 seeds as one training job array plus a
dependent evaluation array (`evaluate` only); then a rerun submits nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm.test_slurm import cluster  # noqa: F401  (the module-scoped cluster fixture)
from tests.sweep.conftest import write_spec

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]


def _sweep(spec, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "masklab.cli", "sweep", str(spec), "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _field(job, key):
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next(w.split("=", 1)[1] for w in out.split() if w.startswith(key + "="))


def test_sweep_as_a_job_array_with_dependent_evaluations(cluster, prepared_data, tmp_path):  # noqa: F811
    spec = write_spec(tmp_path / "spec.yaml", prepared_data, variants={"r15": ["masking.rate=0.15"]},
                      compute={"equalise": "steps", "amount": 6}, evaluations=["evaluate"],
                      executor={"kind": "slurm", "slurm": {"time": "00:10:00", "cpus_per_task": 1}})
    out = tmp_path / "sweep"
    r = _sweep(spec, out, "--wait")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = json.loads(r.stdout.strip().splitlines()[-1])
    assert jobs["train_job"] and jobs["eval_job"] and len(jobs["cells"]) == 2
    for h in jobs["cells"]:
        d = out / "cells" / h
        logs = "\n".join(p.read_text() for p in (out / "slurm").glob("*.out"))
        assert (d / "trained.json").is_file(), logs[-3000:]
        ev = json.loads((d / "eval_evaluate.json").read_text())["metrics"]
        assert 0 < ev["mlm_loss"] < 20
        assert json.loads((d / "trained.json").read_text())["steps"] == 6
    for i in range(2):  # each evaluation element started after its own training element ended
        end = _field(f"{jobs['train_job']}_{i}", "EndTime")
        start = _field(f"{jobs['eval_job']}_{i}", "StartTime")
        assert end <= start, (i, end, start)
    again = _sweep(spec, out)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["train_job"] is None
