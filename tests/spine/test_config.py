import pytest
from omegaconf import OmegaConf

from masklab.config import from_yaml_text, load_config, to_yaml
from masklab.errors import ConfigError


def test_recipes_load_and_compose():
    cfg = load_config("configs/smoke_cpu.yaml")
    assert (cfg.model.num_layers, cfg.model.hidden_size) == (4, 256)
    assert cfg.masking.rate == 0.15 and cfg.data.shards == "runs/smoke/data"
    base = load_config("configs/bert_base.yaml", ["data.shards=/x"])
    assert (base.model.num_layers, base.model.hidden_size, base.data.seq_len) == (12, 768, 128)
    assert load_config("configs/smoke_gpu.yaml").train.precision == "bf16"


def test_overrides_apply():
    cfg = load_config("configs/smoke_cpu.yaml", ["train.max_steps=50", "masking.rate=0.3", "train.betas=[0.9,0.95]"])
    assert cfg.train.max_steps == 50 and cfg.masking.rate == 0.3 and list(cfg.train.betas) == [0.9, 0.95]


@pytest.mark.parametrize("override,needle", [
    ("train.lrr=1", "did you mean 'train.lr'"),
    ("trian.lr=1", "did you mean 'train'"),
    ("model.sparse_predction=head", "did you mean 'model.sparse_prediction'"),
])
def test_unknown_key_names_nearest(override, needle):
    with pytest.raises(ConfigError, match="unknown config key") as e:
        load_config("configs/smoke_cpu.yaml", [override])
    assert needle in str(e.value)


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("defaults:\n  - model/bert_tiny\ntrain:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match="train.max_step.*did you mean 'train.max_steps'"):
        load_config(p)


@pytest.mark.parametrize("override,needle", [
    ("train.max_steps=abc", "train.max_steps"),
    ("masking.rate=1.5", "masking.rate"),
    ("masking.insertion=late", "insert_layer"),
    ("model.preset=gpt", "model.preset"),
    ("masking.mask_prob=0.5", "sum to 1"),
])
def test_bad_values(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("configs/smoke_cpu.yaml", [override])


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/smoke_cpu.yaml", ["train.max_steps"])


def test_saved_config_round_trips():
    cfg = load_config("configs/smoke_cpu.yaml", ["train.max_steps=7"])
    back = from_yaml_text(to_yaml(cfg))
    assert OmegaConf.to_container(back) == OmegaConf.to_container(cfg)


@pytest.mark.parametrize("override,needle", [
    ("train.lr=0", "train.lr=0.0 must be a finite number > 0"), ("train.lr=nan", "train.lr=nan"),
    ("train.betas=[0.9,1.0]", "train.betas"), ("data.num_workers=-1", "data.num_workers"),
    ("train.save_every=0", "train.save_every"), ("train.log_every=0", "train.log_every"),
    ("train.eval_every=0", "train.eval_every"), ("masking.rate=0", "masking.rate=0 masks nothing"),
    ("model.num_heads=0", "model.num_heads must be >= 1"),
])
def test_values_that_used_to_fail_mid_run_fail_at_config_time(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_config("configs/smoke_cpu.yaml", [override])


def test_defaults_written_as_a_string_is_an_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("defaults: model/bert_tiny\n")
    with pytest.raises(ConfigError, match="'defaults' must be a list"):
        load_config(p)
