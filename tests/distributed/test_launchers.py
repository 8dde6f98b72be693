"""torchrun DDP and DeepSpeed ZeRO-1 (gloo, 2 processes) match the single-process run; both resume.

Tolerance: fp32, hidden dropout 0, the same global batch: the only difference is the order of
floating-point sums (all-reduce vs one process), so per-step losses agree to 1e-5 relative.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.distributed

COMMON = TINY + ["model.hidden_dropout=0", "train.max_steps=6", "train.eval_every=1000", "train.save_every=3",
                 "train.keep_last=0"]
RTOL = 1e-5


def rows(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def losses(run):
    return [r["loss"] for r in rows(run)]


def close(got, ref):
    return len(got) == len(ref) and all(abs(a - b) <= RTOL * abs(b) for a, b in zip(got, ref))


def torchrun(args, nproc=2, timeout=600, env=None, nan_at=None):
    """`masklab train` under torchrun; `nan_at`: a step whose loss is made NaN (tests/reliability/hooks.py)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    entry = ["-m", "masklab.cli", "train"] if nan_at is None else ["-m", "tests.reliability.hooks", str(nan_at)]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *entry, "configs/smoke_cpu.yaml", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def single_run(prepared_data, run, extra=(), hooks=None):
    from masklab.config import load_config
    from masklab.pretrain.loop.train import train

    train(load_config("configs/smoke_cpu.yaml", COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}",
                                                          *extra]), hooks=hooks)
    return run


@pytest.fixture(scope="module")
def single(prepared_data, tmp_path_factory):
    return single_run(prepared_data, tmp_path_factory.mktemp("single") / "run")


@pytest.mark.parametrize("launcher", ["ddp", "deepspeed"])
def test_two_processes_match_single_process(launcher, single, prepared_data, tmp_path, request):
    if launcher == "deepspeed":
        request.getfixturevalue("need_deepspeed")
    run = tmp_path / "run"
    extra = ["train.launcher=deepspeed", "train.zero_stage=1"] if launcher == "deepspeed" else ["train.launcher=ddp"]
    r = torchrun(COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}", *extra])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "process group: gloo rank 0/2" in r.stderr
    got, ref = losses(run), losses(single)
    assert close(got, ref), (got, ref)
    if launcher == "deepspeed":
        assert "DeepSpeed engine: ZeRO 1" in r.stderr
        ck = run / "checkpoints" / "step_00000006"
        assert (ck / "deepspeed").is_dir() and (ck / "COMPLETE").is_file()
        assert json.loads((ck / "state.json").read_text())["compat"]["deepspeed.world_size"] == 2
        # resume from step 3 (drop the last checkpoint): steps 4..6 are re-run and give the same losses
        shutil.rmtree(ck)
        r = torchrun(COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}", *extra])
        assert r.returncode == 0, r.stderr[-3000:]
        assert "resumed from" in r.stderr and "at step 3" in r.stderr
        assert [m["step"] for m in rows(run)] == [1, 2, 3, 4, 5, 6] and close(losses(run), got)


def test_ddp_resume_may_change_world_size(single, prepared_data, tmp_path):
    """A single-process checkpoint (step 3) continued by 2 DDP ranks: the same run as uninterrupted."""
    run = tmp_path / "run"
    shutil.copytree(single, run)
    shutil.rmtree(run / "checkpoints" / "step_00000006")
    r = torchrun(COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at step 3 (ddp engine, world size 2; saved by world size 1)" in r.stderr
    assert [m["step"] for m in rows(run)] == [1, 2, 3, 4, 5, 6] and close(losses(run), losses(single))


def test_deepspeed_skips_nan_step_and_refuses_other_world_size(need_deepspeed, prepared_data, tmp_path):
    """A non-finite loss in the third step skips that update under DeepSpeed exactly as in the plain engine
    (same later losses); then a resume with another world size is refused with a clear message."""
    from tests.reliability.hooks import NanAt

    ref = rows(single_run(prepared_data, tmp_path / "single", hooks=NanAt({2})))
    run = tmp_path / "run"
    extra = [f"data.shards={prepared_data}", f"train.out_dir={run}", "train.launcher=deepspeed"]
    r = torchrun(COMMON + extra, nan_at=2)
    assert r.returncode == 0, r.stderr[-3000:]
    got = rows(run)
    assert [m["nan_skipped_total"] for m in got] == [m["nan_skipped_total"] for m in ref] == [0, 0, 1, 1, 1, 1]
    fin = lambda rs: [m["loss"] for m in rs if m["step"] != 3]  # noqa: E731
    assert close(fin(got), fin(ref)), (got, ref)
    r = torchrun(COMMON[:-4] + ["train.max_steps=8"] + extra, nproc=1, timeout=120)
    assert r.returncode != 0 and "deepspeed.world_size: checkpoint 2 vs now 1" in r.stderr, r.stderr[-2000:]
    assert "Use a new train.out_dir" in r.stderr


def test_deepspeed_single_process_without_a_launcher(need_deepspeed, single, prepared_data, tmp_path):
    """`masklab train ... train.launcher=deepspeed` with no torchrun/srun runs as a world of one (it used
    to die inside DeepSpeed's MPI discovery: No module named 'mpi4py') and matches the plain engine."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "train", "configs/smoke_cpu.yaml", *COMMON,
                        f"data.shards={prepared_data}", f"train.out_dir={run}", "train.launcher=deepspeed"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mpi4py" not in r.stderr
    assert [m["step"] for m in rows(run)] == [1, 2, 3, 4, 5, 6] and close(losses(run), losses(single))
