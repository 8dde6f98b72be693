"""torchrun DDP and DeepSpeed ZeRO-1 (gloo, 2 processes) match the single-process run; both resume."""
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.distributed

COMMON = TINY + ["model.hidden_dropout=0", "train.max_steps=6", "train.eval_every=1000", "train.save_every=3",
                 "train.keep_last=0"]


def losses(run):
    return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def torchrun(args, nproc=2, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           "-m", "masklab.cli", "train", "configs/smoke_cpu.yaml", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def single(prepared_data, tmp_path_factory):
    from masklab.config import load_config
    from pretrain.train import train

    run = tmp_path_factory.mktemp("single") / "run"
    train(load_config("configs/smoke_cpu.yaml", COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}"]))
    return losses(run)


@pytest.mark.parametrize("launcher", ["ddp", "deepspeed"])
def test_two_processes_match_single_process(launcher, single, prepared_data, tmp_path):
    run = tmp_path / "run"
    extra = ["train.launcher=deepspeed", "train.zero_stage=1"] if launcher == "deepspeed" else []
    r = torchrun(COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}", *extra])
    assert r.returncode == 0, r.stderr[-3000:]
    got = losses(run)
    assert len(got) == len(single)
    for a, b in zip(got, single):  # fp32; all-reduce order differs from a single sum: tolerance 1e-5 relative
        assert abs(a - b) <= 1e-5 * abs(b), (got, single)
    if launcher == "deepspeed":
        assert (run / "checkpoints" / "step_00000006" / "deepspeed").is_dir()
        # resume from step 3 (drop the last checkpoint): the re-run steps 4..6 give the same losses
        import shutil

        shutil.rmtree(run / "checkpoints" / "step_00000006")
        r = torchrun(COMMON + [f"data.shards={prepared_data}", f"train.out_dir={run}", *extra])
        assert r.returncode == 0, r.stderr[-3000:]
        assert losses(run) == got


def test_resume_with_other_deepspeed_world_size_is_refused(prepared_data, tmp_path):
    run = tmp_path / "run"
    extra = [f"data.shards={prepared_data}", f"train.out_dir={run}", "train.launcher=deepspeed"]
    assert torchrun(COMMON + extra).returncode == 0
    r = torchrun(COMMON[:-4] + ["train.max_steps=8"] + extra, nproc=1)
    assert r.returncode != 0 and "deepspeed.world_size" in r.stderr, r.stderr[-2000:]


def test_rendezvous_timeout_is_a_clear_error(prepared_data, tmp_path):
    # a world of 2 where the second rank never comes: the configured timeout ends it with a message
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "train", "configs/smoke_cpu.yaml", *TINY,
                        f"data.shards={prepared_data}", f"train.out_dir={tmp_path / 'run'}",
                        "train.dist_timeout_s=5"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "process group init failed" in r.stderr, r.stderr[-2000:]
