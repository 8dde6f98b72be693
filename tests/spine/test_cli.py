"""The `masklab` console script: every stage has --help; bad input -> one clear line, exit 2."""
import os
import re
import subprocess
import sys

import pytest

STAGES = ["prep", "train", "export", "import", "env", "smoke"]


def run(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("stage", STAGES)
def test_help(stage):
    r = run(stage, "--help")
    assert r.returncode == 0 and "usage: masklab" in r.stdout


def test_env_reports_backends():
    r = run("env")
    assert r.returncode == 0
    for needle in ("torch", "backend triton", "backend flash_attn", "cuda available"):
        assert needle in r.stdout


def test_prep_train_export_import_round_trip(tmp_path, prepared_data):
    from tests.conftest import TINY

    run_dir = tmp_path / "run"
    r = run("train", "configs/smoke_cpu.yaml", *TINY, f"data.shards={prepared_data}", f"train.out_dir={run_dir}",
            "train.max_steps=3", "train.eval_every=1000", "train.progress=true")
    assert r.returncode == 0, r.stderr
    # stderr is a pipe here, as under Slurm: plain progress lines, never a redrawn tqdm bar
    assert "\r" not in r.stderr and not re.search(r"train:\s+\d+%\|", r.stderr), r.stderr[-2000:]
    assert "step 3/3 (100%): loss" in r.stderr, r.stderr[-2000:]
    r = run("export", str(run_dir), "--out", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    r = run("export", str(run_dir), "--out", str(tmp_path / "hf"))
    assert r.returncode == 2 and "not empty" in r.stderr
    r = run("import", str(tmp_path / "hf"), "--out", str(tmp_path / "imported"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "imported" / "checkpoints" / "step_00000000" / "COMPLETE").is_file()


@pytest.mark.parametrize("args,needle", [
    (["train", "configs/smoke_cpu.yaml", "train.lrr=1"], "did you mean 'train.lr'"),
    (["train", "configs/smoke_cpu.yaml", "train.max_steps=abc"], "train.max_steps"),
    (["train", "configs/missing.yaml"], "config file not found"),
    (["train", "configs/bert_base.yaml"], "data.shards"),
    (["train", "configs/smoke_cpu.yaml", "data.shards=/nonexistent/shards"], "shard directory not found"),
    (["export", "/nonexistent/run", "--out", "/tmp/x"], "neither a complete MaskLab checkpoint"),
    (["prep", "--corpus", "/nonexistent/dir", "--out", "/tmp/x"], "neither a local path"),
])
def test_bad_input_exits_2_with_one_clear_line(args, needle):
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert needle in r.stderr and "Traceback" not in r.stderr
