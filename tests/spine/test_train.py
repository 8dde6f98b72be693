import json

import pytest

from masklab.config import load_config
from masklab.errors import ConfigError, MaskLabError
from masklab.pretrain.checkpoint.store import list_checkpoints
from masklab.pretrain.loop.train import train


def _metrics(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_goes_down_on_the_smoke_corpus(tiny_overrides, tmp_path):
    # the whole pydoc corpus, so the held-out set (10%, ~260 paragraphs) is big enough to compare
    # masked accuracy with the unigram baseline without noise deciding the outcome
    from masklab.data_prep import PrepOptions, prepare

    data = tmp_path / "pydoc"
    prepare(PrepOptions(source="pydoc", out=str(data), vocab_size=4000, validation_fraction=0.1))
    cfg = load_config("configs/smoke_cpu.yaml", tiny_overrides + [
        f"data.shards={data}", "model.hidden_size=128", "model.num_heads=2", "model.intermediate_size=256",
        "train.max_steps=250", "train.eval_every=125", "train.save_every=1000", "train.lr=2e-3",
        "train.warmup_steps=10", "data.batch_size=16", "data.eval_batches=16"])
    r = train(cfg)
    first, last = r["first_eval"], {k[5:]: v for k, v in r["last"].items() if k.startswith("eval_")}
    assert last["loss"] <= 0.8 * first["loss"], (first, last)
    assert last["mlm_acc"] > last["unigram_acc"] + 0.02, last
    rows = [m for m in _metrics(tmp_path / "run") if "loss" in m]
    assert {"loss", "mlm_acc", "realised_mask_rate", "tokens_per_s", "step_time_s", "peak_memory_mb",
            "utilisation"} <= set(rows[-1])
    assert abs(sum(m["realised_mask_rate"] for m in rows) / len(rows) - 0.15) < 0.02


class _StopAfter:
    """Stands in for the SIGUSR1 flag: raised once `n` steps have finished."""

    def __init__(self, n):
        self.n, self.calls, self.signal = n, 0, "test"

    @property
    def set(self):
        self.calls += 1
        return self.calls >= self.n


def test_resume_continues_exactly(tiny_overrides, tmp_path, monkeypatch):
    import masklab.pretrain.loop.train as T

    common = tiny_overrides + ["train.max_steps=12", "train.eval_every=5", "train.warmup_steps=2",
                               "train.save_every=1000"]
    full = train(load_config("configs/smoke_cpu.yaml", common + [f"train.out_dir={tmp_path / 'full'}"]))
    part_dir = tmp_path / "part"
    with monkeypatch.context() as m:
        m.setattr(T, "StopFlag", lambda: _StopAfter(7))
        stopped = train(load_config("configs/smoke_cpu.yaml", common + [f"train.out_dir={part_dir}"]))
    assert stopped["stopped"] and stopped["step"] == 7
    assert [p.name for p in list_checkpoints(part_dir)] == ["step_00000007"]
    # a second start with the full step budget resumes automatically from step 7
    train(load_config("configs/smoke_cpu.yaml", common + [f"train.out_dir={part_dir}"]))
    a = [m for m in _metrics(tmp_path / "full") if "loss" in m]
    b = [m for m in _metrics(part_dir) if "loss" in m]
    assert [m["step"] for m in b] == list(range(1, 13))
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["mlm_acc"] == y["mlm_acc"], (x["step"], x["loss"], y["loss"])
    assert full["step"] == 12


def test_checkpoint_holds_config_and_keeps_last(tiny_overrides, tmp_path):
    train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=6", "train.save_every=2",
                                                                   "train.keep_last=2", "train.eval_every=1000"]))
    ck = list_checkpoints(tmp_path / "run")
    assert [p.name for p in ck] == ["step_00000004", "step_00000006"]
    for p in ck:
        assert {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", "config.yaml",
                "tokenizer", "COMPLETE"} <= {f.name for f in p.iterdir()}
        assert "max_steps: 6" in (p / "config.yaml").read_text()


def test_resume_with_changed_masking_is_refused(tiny_overrides, tmp_path):
    train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=2", "train.eval_every=1000"]))
    with pytest.raises(MaskLabError, match="masking.rate: checkpoint 0.15 vs now 0.3"):
        train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=4", "masking.rate=0.3"]))


def test_a_new_run_does_not_write_beside_another_runs_checkpoints(tiny_overrides, tmp_path):
    base = tiny_overrides + ["train.eval_every=1000", "train.save_every=2"]
    train(load_config("configs/smoke_cpu.yaml", base + ["train.max_steps=4"]))
    before = [p.name for p in list_checkpoints(tmp_path / "run")]
    for resume in ("never", str(tmp_path / "elsewhere" / "checkpoints" / "step_00000002")):
        with pytest.raises(ConfigError, match=r"already holds checkpoints \(newest step_00000004\)"):
            train(load_config("configs/smoke_cpu.yaml", base + ["train.max_steps=6", f"train.resume={resume}"]))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == before
    # rolling back to an earlier checkpoint of the same run is allowed, and replays the same steps
    losses = [m["loss"] for m in _metrics(tmp_path / "run") if "loss" in m]
    r = train(load_config("configs/smoke_cpu.yaml", base + [
        "train.max_steps=4", f"train.resume={tmp_path / 'run' / 'checkpoints' / 'step_00000002'}"]))
    assert r["step"] == 4
    assert [m["loss"] for m in _metrics(tmp_path / "run") if "loss" in m] == losses


def test_checkpoint_from_the_older_masking_algorithm_is_refused():
    from masklab.pretrain.loop.train import check_resume_compatible

    now = {"data.batch_size": 8, "masking.algorithm": 2}
    check_resume_compatible({"compat": {"data.batch_size": 8, "masking.algorithm": 2}}, now)
    with pytest.raises(MaskLabError, match="masking.algorithm: checkpoint 1 vs now 2.*different masks"):
        check_resume_compatible({"compat": {"data.batch_size": 8}}, now)  # written before the key existed


def test_resume_with_changed_batch_is_refused(tiny_overrides, tmp_path):
    train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=2", "train.eval_every=1000"]))
    with pytest.raises(MaskLabError, match="data.batch_size"):
        train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=4", "data.batch_size=4"]))


def test_nan_losses_are_skipped_then_abort(tiny_overrides, tmp_path):
    from tests.reliability.hooks import NanAt

    r = train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=3", "train.eval_every=1000"]),
              hooks=NanAt({1}))
    rows = [m for m in _metrics(tmp_path / "run") if "loss" in m]
    assert r["step"] == 3 and rows[-1]["nan_skipped_total"] == 1
