"""Fault and bad-input suite: a clear message naming the problem, a non-zero exit, nothing half-written."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from masklab.config import load_config
from masklab.errors import MaskLabError
from masklab.pretrain.checkpoint.store import list_checkpoints
from masklab.pretrain.loop.train import train
from tests.conftest import TINY
from tests.reliability.hooks import NanAt

pytestmark = pytest.mark.reliability


def cli(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def snapshot(d):
    return sorted((str(p.relative_to(d)), p.stat().st_size) for p in d.rglob("*")) if d.exists() else None


# 1-3: corpus inputs ---------------------------------------------------------------------------
def test_empty_corpus_cli(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "empty.txt").write_text("")
    r = cli("prep", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "empty" in r.stderr
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_invalid_utf8_is_skipped_and_counted_cli(tmp_path):
    (tmp_path / "c").mkdir()
    text = ("Plain prose about parsers and tokens.\n\n" * 50).encode()
    (tmp_path / "c" / "a.txt").write_bytes(text + b"\xc3\x28 broken\n" + text)
    r = cli("prep", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "out"), "--vocab-size", "120")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 line(s) with invalid UTF-8" in r.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["invalid_utf8_lines_skipped"] == 1


def test_one_megabyte_single_line_document(tmp_path):
    from masklab.data_prep import PrepOptions, ShardSet, prepare
    from masklab.pretrain.data.collator import build_samples

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    rng = np.random.default_rng(0)
    line = " ".join(rng.choice(words, 180_000))[:1_000_000]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "big.txt").write_text(line + "\n\nA second, short document.\n")
    prepare(PrepOptions(source=str(tmp_path / "c"), out=str(tmp_path / "out"), vocab_size=100,
                        validation_fraction=0.0))
    s = ShardSet(tmp_path / "out")
    samples = build_samples(s, 64)
    assert int(samples.length.max()) == 62 and int(samples.length.sum()) == s.num_tokens
    r = train(load_config("configs/smoke_cpu.yaml", TINY + [f"data.shards={tmp_path / 'out'}",
                                                            f"train.out_dir={tmp_path / 'run'}", "train.max_steps=2"]))
    assert r["step"] == 2


# 4-7: config and data ----------------------------------------------------------------------------
@pytest.mark.parametrize("override,needle", [("model.hiden_size=8", "did you mean 'model.hidden_size'"),
                                             ("data.batch_size=many", "data.batch_size")])
def test_config_errors_cli(override, needle, tmp_path):
    r = cli("train", "configs/smoke_cpu.yaml", override, f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and needle in r.stderr
    assert not (tmp_path / "run").exists()


def test_missing_tokenizer_cli(tmp_path):
    r = cli("prep", "--tokenizer", str(tmp_path / "none.json"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "tokenizer not found" in r.stderr and not (tmp_path / "out").exists()


def test_bad_shard_checksum_cli(prepared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    with open(data / "train" / "shard_00000" / "word_starts.npy", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x07")
    r = cli("train", "configs/smoke_cpu.yaml", *TINY, f"data.shards={data}", f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and "word_starts.npy" in r.stderr
    assert not (tmp_path / "run").exists()


# 8, 9, 13: checkpoints ---------------------------------------------------------------------------
@pytest.fixture
def trained_run(tiny_overrides, tmp_path):
    train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=4", "train.save_every=2",
                                                                   "train.eval_every=1000"]))
    return tmp_path / "run"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_corrupted_checkpoint_file(trained_run, tmp_path, damage):
    ck = list_checkpoints(trained_run)[-1]
    f = ck / "model.safetensors"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "garbage":
        f.write_bytes(b"\x00" * 1000)
    else:  # a pickle payload where weights belong must never be executed
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))
        f.write_bytes(pickle.dumps(Evil()))
    r = cli("export", str(trained_run), "--out", str(tmp_path / "hf"))
    assert r.returncode == 2 and "corrupted checkpoint file" in r.stderr and "model.safetensors" in r.stderr
    assert not (tmp_path / "hf").exists() and not (tmp_path / "pwned").exists()


def test_torch_load_weights_only_refuses_pickle_payloads(tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    p = tmp_path / "x.pt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(Exception):
        torch.load(p, weights_only=True)
    assert not (tmp_path / "pwned").exists()


def test_tokenizer_mismatch_on_resume(trained_run, tmp_path):
    from masklab.data_prep import PrepOptions, prepare

    other = tmp_path / "other"
    prepare(PrepOptions(source="pydoc", out=str(other), max_documents=300, vocab_size=900))
    before = snapshot(trained_run / "checkpoints")
    with pytest.raises(MaskLabError, match="data.shards_sha"):
        train(load_config("configs/smoke_cpu.yaml", TINY + [f"data.shards={other}", f"train.out_dir={trained_run}",
                                                            "train.max_steps=8"]))
    assert snapshot(trained_run / "checkpoints") == before


def test_disk_full_during_save_keeps_previous_checkpoint(trained_run, tiny_overrides, monkeypatch):
    import errno

    import masklab.pretrain.checkpoint.store as C

    before = snapshot(trained_run / "checkpoints")
    real = C.save_file
    calls = {"n": 0}

    def failing(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # fail in the middle of writing the checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(C, "save_file", failing)
    with pytest.raises(MaskLabError, match="No space left on device while writing .*step_00000006; the previous "
                                           "checkpoint .*step_00000004 is intact"):
        train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=6", "train.save_every=2"]))
    assert snapshot(trained_run / "checkpoints") == before
    assert [p.name for p in list_checkpoints(trained_run)] == ["step_00000002", "step_00000004"]


# 10: NaN losses -----------------------------------------------------------------------------------
def test_nan_loss_skipped_and_counted(tiny_overrides, tmp_path):
    r = train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=5", "train.eval_every=1000"]),
              hooks=NanAt({1, 3}))
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert r["step"] == 5 and [m["nan_skipped_total"] for m in rows if "loss" in m] == [0, 1, 1, 2, 2]


def test_nan_loss_aborts_after_n_in_a_row(tiny_overrides, tmp_path):
    with pytest.raises(MaskLabError, match="3 non-finite losses in a row"):
        train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=10", "train.max_nan_skips=3",
                                                                       "train.eval_every=1000"]), hooks=NanAt(range(2, 100)))


# kill -9 and resume -------------------------------------------------------------------------------
def test_kill9_at_random_points_resumes_bit_for_bit(prepared_data, tmp_path):
    args = ["train", "configs/smoke_cpu.yaml", *TINY, f"data.shards={prepared_data}", "train.max_steps=16",
            "train.save_every=3", "train.eval_every=1000", "train.keep_last=0"]
    ref = tmp_path / "ref"
    assert cli(*args, f"train.out_dir={ref}").returncode == 0
    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rng = np.random.default_rng(0)
    for kill_after in sorted(rng.choice(np.arange(2, 14), 3, replace=False)):
        p = subprocess.Popen([sys.executable, "-m", "masklab.cli", *args, f"train.out_dir={run}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = run / "metrics.jsonl"
        t0 = time.time()
        while time.time() - t0 < 120 and p.poll() is None:
            if log.exists() and sum(1 for l in log.read_text().splitlines() if '"loss"' in l) >= kill_after:
                break
            time.sleep(0.02)
        p.kill()
        p.wait()
    r = cli(*args, f"train.out_dir={run}")
    assert r.returncode == 0, r.stderr
    lines = lambda d: [l for l in (d / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]  # noqa: E731
    strip = lambda l: {k: v for k, v in json.loads(l).items() if k in ("step", "loss", "mlm_acc", "lr", "grad_norm",  # noqa: E731
                                                                        "realised_mask_rate", "mask_rate")}
    assert [strip(l) for l in lines(run)] == [strip(l) for l in lines(ref)]


def test_incomplete_checkpoints_are_ignored_with_a_message(tiny_overrides, tmp_path, caplog):
    """What a kill -9 during a save leaves behind: a temp dir, or a step dir without COMPLETE."""
    run = tmp_path / "run"
    train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=3", "train.eval_every=1000"]))
    ck = run / "checkpoints"
    shutil.copytree(ck / "step_00000003", ck / "step_00000005")
    (ck / "step_00000005" / "COMPLETE").unlink()
    (ck / ".tmp-step_00000006-999").mkdir()
    (ck / ".tmp-step_00000006-999" / "model.safetensors").write_bytes(b"partial")
    with caplog.at_level("WARNING"):
        r = train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=4", "train.eval_every=1000"]))
    assert "ignoring incomplete checkpoint" in caplog.text and "step_00000005" in caplog.text
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert r["step"] == 4 and [m["step"] for m in rows] == [1, 2, 3, 4]  # resumed from step 3


def test_only_incomplete_checkpoint_starts_fresh(tiny_overrides, tmp_path, caplog):
    ck = tmp_path / "run" / "checkpoints" / "step_00000002"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"partial")
    with caplog.at_level("WARNING"):
        r = train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=2", "train.eval_every=1000"]))
    assert "ignoring incomplete checkpoint" in caplog.text and r["step"] == 2
