"""Bad input for multi-process starts: a clear error within train.dist_timeout_s, never a hang;
and crash safety: kill -9 while a checkpoint is being written."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.distributed
TIMEOUT = 5  # train.dist_timeout_s in these tests; Python start-up + imports add ~10 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank, port, config, prepared_data, tmp_path, world=2):
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "masklab.cli", "train", config, *TINY, f"data.shards={prepared_data}",
                             f"train.out_dir={tmp_path / 'run'}", f"train.dist_timeout_s={TIMEOUT}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, limit=90):
    out = []
    for p in procs:
        try:
            err = p.communicate(timeout=limit)[1]
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("a rank hung past the configured timeout")
        out.append((p.returncode, err))
    return out


def test_rendezvous_timeout_is_a_clear_error(prepared_data, tmp_path):
    """A world of 2 where the second rank never comes: the configured timeout ends it with a message."""
    t0 = time.time()
    [(rc, err)] = finish([start_rank(0, free_port(), "configs/smoke_cpu.yaml", prepared_data, tmp_path)])
    assert rc == 2 and "process group init failed" in err and "rank 0/2" in err, err[-2000:]
    assert time.time() - t0 < 60


def test_port_taken_by_another_program_is_a_clear_error_on_every_rank(prepared_data, tmp_path):
    """MASTER_PORT held by some other listener: rank 0 cannot bind (EADDRINUSE); rank 1 connects to
    the stranger and would wait for a reply forever without our watchdog."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        t0 = time.time()
        res = finish([start_rank(r, port, "configs/smoke_cpu.yaml", prepared_data, tmp_path) for r in (0, 1)])
    assert res[0][0] == 2 and "address already in use" in res[0][1], res[0][1][-2000:]
    assert res[1][0] == 2 and "no rendezvous within train.dist_timeout_s=5s" in res[1][1], res[1][1][-2000:]
    assert time.time() - t0 < 60


def test_config_missing_on_one_node(prepared_data, tmp_path):
    """Rank 1's node lacks the config file: it says so at once; rank 0 gives up after the timeout."""
    t0 = time.time()
    res = finish([start_rank(0, free_port(), "configs/smoke_cpu.yaml", prepared_data, tmp_path),
                  start_rank(1, free_port(), str(tmp_path / "missing.yaml"), prepared_data, tmp_path)])
    assert res[1][0] == 2 and "config file not found" in res[1][1], res[1][1][-2000:]
    assert res[0][0] == 2 and "process group init failed" in res[0][1], res[0][1][-2000:]
    assert time.time() - t0 < 60


def test_world_from_plain_srun_variables(monkeypatch):
    from masklab.pretrain.loop import distributed as D

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert D.world_from_env() == D.World(3, 4, 1)
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    D._slurm_master()
    assert os.environ["MASTER_PORT"] == str(20000 + 12345 % 20000)
    monkeypatch.setenv("RANK", "0")  # torchrun's variables win over Slurm's
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert D.world_from_env() == D.World(0, 2, 0)


def test_single_launcher_under_torchrun_is_refused(prepared_data, tmp_path, monkeypatch):
    from masklab.config import load_config
    from masklab.errors import ConfigError
    from masklab.pretrain.loop.train import train

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config("configs/smoke_cpu.yaml", TINY + [f"data.shards={prepared_data}", "train.launcher=single",
                                                         f"train.out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="train.launcher=single, but this process is rank 1 of 2"):
        train(cfg)


SLOW_SAVE = """
import os, sys, time
import masklab.pretrain.checkpoint.store as c
orig, calls = c.save_file, [0]
def slow(tensors, path, metadata=None):
    orig(tensors, path, metadata=metadata)
    if path.endswith("model.safetensors"):
        calls[0] += 1
        if calls[0] == 2:  # inside the second checkpoint's write: tell the test, then dawdle
            open(os.environ["IN_SAVE_FLAG"], "w").close()
            time.sleep(300)
c.save_file = slow
from masklab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill9_while_writing_a_checkpoint(prepared_data, tmp_path):
    """kill -9 inside save (the second checkpoint half written): the next start ignores it with a
    message, resumes from the first one, and ends with the uninterrupted run's metrics."""
    args = ["train", "configs/smoke_cpu.yaml", *TINY, f"data.shards={prepared_data}", "train.max_steps=6",
            "train.save_every=2", "train.eval_every=1000", "train.keep_last=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IN_SAVE_FLAG": str(tmp_path / "in_save")}
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert subprocess.run([sys.executable, "-m", "masklab.cli", *args, f"train.out_dir={ref}"], env=env,
                          capture_output=True).returncode == 0
    p = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *args, f"train.out_dir={run}"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (tmp_path / "in_save").exists():
        assert p.poll() is None and time.time() - t0 < 120, "the run never reached its second save"
        time.sleep(0.05)
    p.kill()
    p.wait()
    ck = run / "checkpoints"
    assert [d.name for d in sorted(ck.iterdir()) if not d.name.startswith(".")] == ["step_00000002"]
    assert any(d.name.startswith(".step_00000004.tmp-") for d in ck.iterdir())  # the half-written one
    r = subprocess.run([sys.executable, "-m", "masklab.cli", *args, f"train.out_dir={run}"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ignoring incomplete checkpoint" in r.stderr and "resumed from" in r.stderr and "at step 2" in r.stderr
    keys = ("step", "loss", "mlm_acc", "lr", "grad_norm")
    pick = lambda d: [{k: m[k] for k in keys} for m in  # noqa: E731
                      (json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert pick(run) == pick(ref)
