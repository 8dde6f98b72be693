"""On a real local Slurm cluster (2 emulated nodes): sbatch DDP and DeepSpeed jobs, pre-emption + requeue."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        if CI:
            pytest.fail("CI=true: the Slurm tests must run, but they need root to start slurmctld/slurmd")
        pytest.skip("the local Slurm cluster needs root (slurm/local_cluster.sh)")
    was_running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(ROOT / "slurm" / "local_cluster.sh")], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        msg = f"could not start the local Slurm cluster: {r.stderr[-1500:]}"
        pytest.fail(msg) if CI else pytest.skip(msg)
    yield
    if not was_running:
        subprocess.run(["bash", str(ROOT / "slurm" / "local_cluster.sh"), "stop"], timeout=60)


def sbatch(script, out, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if sys.prefix != sys.base_prefix:  # the way a user points the job at the project's venv
        env["MASKLAB_VENV"] = sys.prefix
    else:
        env["MASKLAB_PYTHON"] = sys.executable
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run(["sbatch", "--parsable", f"--output={out}", str(ROOT / "slurm" / script), *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def wait(jid, timeout=400):
    """-> `scontrol show job` of the finished job (kept MinJobAge=300 s by local_cluster.sh)."""
    t0 = time.time()  # poll squeue: `sbatch --wait` backs off to tens of seconds
    while time.time() - t0 < timeout:
        if not subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True).stdout.strip():
            return subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True).stdout
        time.sleep(1)
    subprocess.run(["scancel", jid])
    pytest.fail(f"job {jid} did not finish in {timeout}s")


def metrics(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def args(prepared_data, run, steps, *extra):
    return ["configs/smoke_cpu.yaml", *TINY, "model.hidden_dropout=0", f"data.shards={prepared_data}",
            f"train.out_dir={run}", f"train.max_steps={steps}", "train.eval_every=1000", "train.save_every=1000", *extra]


@pytest.fixture(scope="module")
def reference(prepared_data, tmp_path_factory):
    from masklab.config import load_config
    from masklab.pretrain.loop.train import train

    run = tmp_path_factory.mktemp("ref") / "run"
    train(load_config(args(prepared_data, run, 60)[0], args(prepared_data, run, 60)[1:]))
    return [m["loss"] for m in metrics(run)]


def close(got, ref):  # fp32, dropout 0, same global batch: only the fp summation order differs
    return len(got) == len(ref) and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(got, ref))


@pytest.mark.parametrize("script,extra", [("pretrain.sbatch", []),
                                          ("pretrain_deepspeed.sbatch", ["train.zero_stage=2"])])
def test_two_node_job(cluster, prepared_data, tmp_path, reference, script, extra, request):
    if "deepspeed" in script:
        request.getfixturevalue("need_deepspeed")
    run, out = tmp_path / "run", tmp_path / "job.out"
    state = wait(sbatch(script, out, *args(prepared_data, run, 60, *extra)))
    log = out.read_text()
    assert "JobState=COMPLETED" in state, state + log[-3000:]
    assert "nodes=2 (n[1-2])" in log and "world_size=2" in log, log[-3000:]
    # one torchrun per node; which node gets rank 0 is up to the c10d rendezvous
    assert "gloo rank 0/2 on node n" in log and "gloo rank 1/2 on node n" in log, log[-3000:]
    assert "/2 on node n1" in log and "/2 on node n2" in log, log[-3000:]
    if script == "pretrain_deepspeed.sbatch":
        assert "DeepSpeed engine: ZeRO 2" in log
    got = [m["loss"] for m in metrics(run)]
    assert close(got, reference), (got, reference)


@pytest.mark.parametrize("script", ["pretrain.sbatch", "pretrain_deepspeed.sbatch"])
def test_preemption_requeues_and_resumes_exactly(cluster, prepared_data, tmp_path, reference, script, request):
    """scancel --signal=USR1 mid-run (what --signal=USR1@180 does near the time limit): every rank
    saves at the same step, rank 0 requeues the job, the restart (SLURM_RESTART_COUNT=1) resumes."""
    if "deepspeed" in script:
        request.getfixturevalue("need_deepspeed")
    run, out = tmp_path / "run", tmp_path / "job.out"
    jid = sbatch(script, out, *args(prepared_data, run, 60, "train.log_every=1"))
    t0 = time.time()
    while time.time() - t0 < 180:
        if (run / "metrics.jsonl").exists() and len(metrics(run)) >= 10:
            break
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", jid], check=True)
    state = wait(jid)
    log = out.read_text()
    assert "JobState=COMPLETED" in state and "Restarts=1" in state, state + log[-3000:]
    assert "restart 0" in log and "restart 1" in log, log[-3000:]  # SLURM_RESTART_COUNT=1 after the requeue
    assert "saved" in log and "DUE TO JOB REQUEUE" in log
    rows = metrics(run)
    assert [m["step"] for m in rows] == list(range(1, 61))  # nothing repeated or skipped
    assert close([m["loss"] for m in rows], reference)
    restarted = log[log.index("restart 1"):]
    assert "resumed from" in restarted and "world size 2" in restarted


def test_scancel_stops_the_job_without_requeue(cluster, prepared_data, tmp_path):
    """scancel (SIGTERM to every process of the job) is a stop, not a pre-emption: the ranks save,
    nobody requeues, the job ends CANCELLED with no restart and a complete, verified checkpoint."""
    from masklab.pretrain.checkpoint.store import latest_checkpoint, load_state
    from masklab.pretrain.checkpoint.integrity import run_key, verify_manifest

    run, out = tmp_path / "run", tmp_path / "job.out"
    jid = sbatch("pretrain.sbatch", out, *args(prepared_data, run, 400, "train.log_every=1"))
    t0 = time.time()
    while time.time() - t0 < 180 and not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 10):
        time.sleep(0.1)
    subprocess.run(["scancel", jid], check=True)
    state = wait(jid)
    time.sleep(3)  # a requeue would show up as a pending job by now
    state = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True).stdout
    log = out.read_text()
    assert "JobState=CANCELLED" in state and "Restarts=0" in state, state + log[-3000:]
    assert "restart 1" not in log and "requeueing" not in log, log[-3000:]
    ck = latest_checkpoint(run)
    assert ck is not None and verify_manifest(ck, run_key(run)), log[-3000:]
    assert 10 <= load_state(ck)["step"] < 400

