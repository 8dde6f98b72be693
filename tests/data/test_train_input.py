"""The input pipeline through train(): exact resume with packing + token budgets, refused changes."""
import json

import pytest

from masklab.config import load_config
from masklab.errors import MaskLabError
from masklab.pretrain.loop.train import train


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in m}


def test_docs_packing_token_budget_resume_is_exact_and_changes_are_refused(tiny_overrides, tmp_path):
    ov = tiny_overrides + ["data.packing=docs", "data.batch_tokens=512", "train.max_steps=4", "train.save_every=2",
                           "train.eval_every=1000", "train.warmup_steps=1"]
    full = tmp_path / "full"
    train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={full}"]))
    part = tmp_path / "part"
    train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={part}", "train.max_steps=2"]))
    state = json.loads((part / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["data_position"] > 0 and state["compat"]["data.packing"] == "docs"
    train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={part}"]))
    a, b = _losses(full), _losses(part)
    assert [b[s] for s in (3, 4)] == [a[s] for s in (3, 4)]  # bit-for-bit
    with pytest.raises(MaskLabError, match="data.packing: checkpoint docs vs now concat"):
        train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={part}", "data.packing=concat",
                                                          "train.max_steps=6"]))
    # a checkpoint from before the Feistel order (no data.order key) is refused with the reason
    f = part / "checkpoints" / "step_00000004" / "state.json"
    s = json.loads(f.read_text())
    del s["compat"]["data.order"]
    f.write_text(json.dumps(s))
    with pytest.raises(MaskLabError, match="data.order: checkpoint 1 vs now 2 .*orders the samples differently"):
        train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={part}", "train.max_steps=6"]))


def test_token_budget_accumulation_equals_the_unsplit_batch(tiny_overrides, tmp_path):
    ov = tiny_overrides + ["data.batch_tokens=1024", "train.max_steps=3", "train.eval_every=1000",
                           "train.save_every=1000", "model.hidden_dropout=0.0"]
    one = train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={tmp_path / 'one'}"]))
    four = train(load_config("configs/smoke_cpu.yaml", ov + [f"train.out_dir={tmp_path / 'four'}",
                                                             "data.micro_batch_tokens=256"]))
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "four")
    assert one["step"] == four["step"] == 3
    assert all(abs(a[s] - b[s]) < 1e-4 * abs(a[s]) for s in (1, 2, 3)), (a, b)
