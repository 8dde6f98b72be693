"""End to end: every masking recipe in configs/masking/ trains a few steps and its loss goes down."""
from pathlib import Path

import pytest

from masklab.config import load_config
from masklab.pretrain.loop.train import train
from tests.conftest import TINY

RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "masking").glob("*.yaml"))


def test_every_strategy_has_a_recipe():
    assert {"standard", "whole_word", "span", "pmi", "late", "linear_schedule", "wettig_40", "informask"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_loss_decreases(recipe, prepared_data, pmi_table, weights_table, tmp_path):
    extra = []
    if recipe == "pmi":
        extra = [f"masking.pmi_table={pmi_table}"]
    if recipe == "informask":
        extra = [f"masking.informask_weights={weights_table}"]
    if recipe == "late":
        extra = ["masking.insert_layer=1"]  # the tiny model has 2 layers
    if recipe == "token_dropping":
        extra = ["model.num_layers=3"]  # layer 1 drops; the first and last see every token
    cfg = load_config("configs/smoke_cpu.yaml", TINY + [f"+masking/{recipe}", f"data.shards={prepared_data}",
                                                        f"train.out_dir={tmp_path / 'run'}", "train.max_steps=60",
                                                        "train.eval_every=60", "train.lr=3e-3",
                                                        "train.warmup_steps=5", "train.num_threads=1", *extra])
    r = train(cfg)
    last = r["last"]["eval_loss"]
    # InforMask masks rare (informative) tokens more often: harder targets, a slower fall
    factor = 0.9 if recipe == "informask" else 0.8
    assert r["step"] == 60 and last < factor * r["first_eval"]["loss"], (recipe, r["first_eval"]["loss"], last)
