"""End to end: every masking recipe in configs/masking/ trains a few steps and its loss goes down."""
from pathlib import Path

import pytest

from masklab.config import load_config
from pretrain.train import train
from tests.conftest import TINY

RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "masking").glob("*.yaml"))


def test_every_strategy_has_a_recipe():
    assert {"standard", "whole_word", "span", "pmi", "late", "linear_schedule", "wettig_40"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_loss_decreases(recipe, prepared_data, tmp_path):
    extra = []
    if recipe == "pmi":
        from data_prep.pmi import build_pmi_table

        build_pmi_table(str(prepared_data), str(tmp_path / "pmi"), min_count=2, size=500, progress=False)
        extra = [f"masking.pmi_table={tmp_path / 'pmi'}"]
    if recipe == "late":
        extra = ["masking.insert_layer=1"]  # the tiny model has 2 layers
    cfg = load_config("configs/smoke_cpu.yaml", TINY + [f"+masking/{recipe}", f"data.shards={prepared_data}",
                                                        f"train.out_dir={tmp_path / 'run'}", "train.max_steps=40",
                                                        "train.eval_every=40", "train.lr=3e-3",
                                                        "train.warmup_steps=5", *extra])
    r = train(cfg)
    last = r["last"]["eval_loss"]
    assert last < 0.8 * r["first_eval"]["loss"], (recipe, r["first_eval"]["loss"], last)
