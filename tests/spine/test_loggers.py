"""train.loggers: the old train.tensorboard key keeps loading and means what it meant; W&B (offline)
gets every numeric record, grouped by WANDB_RUN_GROUP, and a resumed run continues the same W&B run."""
import pytest

from masklab.config import from_yaml_text, load_config, to_yaml
from masklab.errors import ConfigError
from masklab.pretrain.loop.metrics import MetricsLog, active_loggers


def test_old_tensorboard_key_keeps_loading(prepared_data):
    base = ["configs/smoke_cpu.yaml", [f"data.shards={prepared_data}"]]
    assert active_loggers(load_config(*base).train) == ["tensorboard"]
    assert active_loggers(load_config(base[0], base[1] + ["train.tensorboard=false"]).train) == []
    both = load_config(base[0], base[1] + ["train.loggers=[tensorboard,wandb]"])
    assert active_loggers(both.train) == ["tensorboard", "wandb"]
    # a config saved before train.loggers existed: `tensorboard: false` and no loggers key
    text = to_yaml(load_config(*base)).replace("  loggers:\n  - tensorboard\n", "").replace(
        "tensorboard: null", "tensorboard: false")
    assert "loggers" not in text
    assert active_loggers(from_yaml_text(text).train) == []
    with pytest.raises(ConfigError, match="train.loggers=\\['mlflow'\\]"):
        load_config(base[0], base[1] + ["train.loggers=[mlflow]"])


def test_wandb_offline_logs_grouped_and_resumes_the_same_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is an optional extra (pip install 'masklab[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_RUN_GROUP", "sweep-x")
    cfg = {"project": "masklab-test", "group": "", "config": {"train": {"seed": 0}}}
    m = MetricsLog(tmp_path, True, False, wandb=cfg)
    run_id, group = m.wb.id, m.wb.group
    for s in (1, 2, 3):
        m.log(s, {"loss": 1.0 / s, "note": "text is not a scalar"})
    m.close()
    assert group == "sweep-x"
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert runs and list(runs[0].glob("*.wandb"))
    m2 = MetricsLog(tmp_path, True, False, resume_step=2, wandb=cfg)  # a resume: the same W&B run id
    assert m2.wb.id == run_id
    m2.close()
    assert wandb.run is None
