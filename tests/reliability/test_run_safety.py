"""Issue 14 (run safety): crafted DeepSpeed state, poisoned checkpoints, out_dir lock, torn metrics,
full disks, SIGTERM vs SIGUSR1, bad saved configs, stale temp dirs. Unit-sized: no training runs."""
import json
import os
import pickle
import signal
from types import SimpleNamespace

import pytest

from tests.small_filesystem import small_tmpfs
import torch

from masklab.config import load_saved_config
from masklab.errors import CheckpointError, ConfigError, MaskLabError
from masklab.pretrain.checkpoint.store import latest_checkpoint, load_model_weights, save_checkpoint
from masklab.pretrain.checkpoint.integrity import run_key, verify_manifest

pytestmark = pytest.mark.reliability


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))


def _save(run, step, model=None):
    return save_checkpoint(run, step, model or _model(), None, {"out_dir": str(run)}, "model: {}\n", None)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ds_engine(out_dir, trust=False):
    """A DeepSpeedEngine whose `ds` loads files the way DeepSpeed does (torch.load, weights_only=False)."""
    from masklab.pretrain.loop.engine import DeepSpeedEngine

    eng = DeepSpeedEngine.__new__(DeepSpeedEngine)
    eng.tc = SimpleNamespace(out_dir=str(out_dir), trust_checkpoint=trust)
    eng.ds = SimpleNamespace(load_checkpoint=lambda d, **k: [torch.load(p, weights_only=False)
                                                              for p in sorted(__import__("pathlib").Path(d).rglob("*.pt"))])
    return eng


def test_crafted_deepspeed_checkpoint_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    victim = tmp_path / "victim"
    run_key(victim, create=True)
    crafted = tmp_path / "evil" / "checkpoints" / "step_00000001"  # the structure the old guard checked
    (crafted / "deepspeed" / "state").mkdir(parents=True)
    (crafted / "deepspeed" / "state" / "mp_rank_00_model_states.pt").write_bytes(pickle.dumps(_Evil(marker)))
    (crafted / "COMPLETE").write_text("step 1\n")
    (crafted.parent.parent / "config.yaml").write_text("model: {}\n")
    (crafted / "state.json").write_text(json.dumps({"step": 1, "out_dir": str(victim.resolve())}))
    with pytest.raises(CheckpointError, match="has no SHA256SUMS.json.*--allow-missing-checksums"):
        _ds_engine(victim).load_extra(crafted)  # issue 35: no checksums is refused first
    from masklab.pretrain.checkpoint.integrity import allow_missing_checksums
    allow_missing_checksums(True)
    try:  # allowing missing checksums does not allow unsigned pickles
        with pytest.raises(CheckpointError, match="refusing to load its DeepSpeed state.*runs pickle.*trust_checkpoint"):
            _ds_engine(victim).load_extra(crafted)
    finally:
        allow_missing_checksums(False)
    # a forged manifest (right hashes, no key) does not help either
    from masklab.pretrain.checkpoint.integrity import write_manifest
    write_manifest(crafted, os.urandom(32))
    with pytest.raises(CheckpointError, match="not signed by train.out_dir"):
        _ds_engine(victim).load_extra(crafted)
    assert not marker.exists()


def test_signed_or_trusted_deepspeed_pickle_still_cannot_run_code(tmp_path):
    """Second guard: even a checkpoint that passes the signature (or trust_checkpoint=true) is read
    with weights_only=True; a payload naming os.system is refused by name and never runs."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    ds = tmp_path / "ds" / "state"
    ds.mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2)}, "client": _Evil(marker)}, ds / "mp_rank_00_model_states.pt")
    ck = save_checkpoint(run, 1, _model(), None, {}, "model: {}\n", None, extra_dirs={"deepspeed": tmp_path / "ds"})
    assert verify_manifest(ck, run_key(run))  # signed by this run: the first guard lets it through
    for trust in (False, True):
        with pytest.raises(CheckpointError, match=r"refused to unpickle DeepSpeed state.*system"):
            _ds_engine(run, trust=trust).load_extra(ck)
    assert not marker.exists()
    assert torch.load.__name__ == "load" and "weights_only" not in repr(torch.load)  # torch.load put back


def test_own_signed_deepspeed_state_loads_and_tampering_is_caught(tmp_path):
    run = tmp_path / "run"
    ds = tmp_path / "ds" / "state"
    ds.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, ds / "mp_rank_00_model_states.pt")
    ck = save_checkpoint(run, 1, _model(), None, {}, "model: {}\n", None, extra_dirs={"deepspeed": tmp_path / "ds"})
    assert verify_manifest(ck, run_key(run))
    _ds_engine(run).load_extra(ck)  # our own checkpoint: loads
    with open(ck / "deepspeed" / "state" / "mp_rank_00_model_states.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        _ds_engine(run, trust=True).load_extra(ck)


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path, caplog):
    run = tmp_path / "run"
    good = _save(run, 2)
    bad = _model()
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with caplog.at_level("WARNING"):
        assert _save(run, 3, bad) is None
    assert "non-finite weights in 0.weight" in caplog.text and latest_checkpoint(run) == good
    # keep_last=1 after a rollback never deletes the checkpoint just written
    (run / "checkpoints" / "step_00000002").rename(run / "checkpoints" / "step_00000009")
    kept = save_checkpoint(run, 4, _model(), None, {}, "model: {}\n", None, keep_last=1)
    assert kept.is_dir()
    # a NaN weight that reaches a checkpoint (written by something else) is named on load
    from safetensors.torch import save_file
    sd = {k: v.clone() for k, v in bad.state_dict().items()}
    save_file(sd, str(kept / "model.safetensors"))
    from masklab.pretrain.checkpoint.integrity import write_manifest
    write_manifest(kept, None)  # re-hashed by whoever wrote it: the sums match, the NaN is still caught
    with pytest.raises(CheckpointError, match="non-finite.*tensor 0.weight"):
        load_model_weights(_model(), kept)


def test_changed_checkpoint_file_is_refused_on_load(tmp_path):
    ck = _save(tmp_path / "run", 1)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted checkpoint file .*model.safetensors: sha256"):
        load_model_weights(_model(), ck)


def test_second_run_on_one_out_dir_fails_naming_the_holder(tiny_overrides, tmp_path):
    from masklab.config import load_config
    from masklab.pretrain.checkpoint.run_lock import RunLock
    from masklab.pretrain.loop.train import train

    with RunLock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=rf"in use by another run \(host .*, pid {os.getpid()}, started "):
            train(load_config("configs/smoke_cpu.yaml", tiny_overrides + ["train.max_steps=1"]))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_torn_metrics_line_is_cut_on_resume(tmp_path):
    from masklab.pretrain.loop.metrics import MetricsLog

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n{"step": 3, "lo')
    m = MetricsLog(tmp_path, True, False, resume_step=2)
    m.log(3, {"loss": 1.8})
    m.close()
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("sig,requeue", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_only_the_preemption_signal_requeues(sig, requeue):
    from masklab.pretrain.loop.stop import StopFlag

    stop = StopFlag()
    try:
        os.kill(os.getpid(), sig)
        assert stop.set and stop.requeue is requeue
        os.kill(os.getpid(), signal.SIGUSR1)  # a cancel that came first is not undone by a later warning
        assert stop.requeue is requeue
    finally:
        stop.close()


@pytest.mark.parametrize("content", [b"\x89PNG\x00\xff", b"a: [1, 2", b"- 1\n- 2\n", b""])
def test_bad_saved_config_is_one_line(tmp_path, content):
    (tmp_path / "config.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match="config.yaml: ") as e:
        load_saved_config(tmp_path / "config.yaml")
    assert "\n" not in str(e.value)


def test_model_change_is_refused_on_resume():
    from masklab.config import load_config
    from masklab.pretrain.loop.distributed import World
    from masklab.pretrain.loop.resume import check_resume_compatible, resume_compat

    old = resume_compat(load_config("configs/smoke_cpu.yaml", ["model.num_heads=2"]), World(), "torch", "x")
    new = resume_compat(load_config("configs/smoke_cpu.yaml", ["model.num_heads=4"]), World(), "torch", "x")
    with pytest.raises(MaskLabError, match="model.num_heads: checkpoint 2 vs now 4"):
        check_resume_compatible({"compat": old}, new)


@pytest.fixture
def small_fs(tmp_path):
    with small_tmpfs(tmp_path, "256k") as d:
        yield d


def test_real_full_disk_is_one_line_and_the_previous_checkpoint_survives(small_fs):
    run = small_fs / "run"
    first = _save(run, 1)
    big = torch.nn.Linear(256, 256)  # 256 KiB of weights: cannot fit next to the first checkpoint
    with pytest.raises(MaskLabError, match=r"No space left on device while writing .*step_00000002; the previous "
                                           r"checkpoint .*step_00000001 is intact"):
        save_checkpoint(run, 2, big, None, {}, "model: {}\n", None)
    assert latest_checkpoint(run) == first and verify_manifest(first, run_key(run))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001"]
