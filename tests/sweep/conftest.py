"""A tiny sweep spec over the session's prepared corpus (2-layer x 64 model, a few steps)."""
import pytest
import yaml

from tests.conftest import TINY


def write_spec(path, data, **kw):
    spec = {"name": "tiny", "base": "configs/smoke_cpu.yaml",
            "overrides": [*TINY, f"data.shards={data}", "train.max_steps=8", "train.warmup_steps=2",
                          "train.log_every=2", "train.eval_every=4", "train.save_every=2", "data.eval_batches=2"],
            "variants": {"r15": ["masking.rate=0.15"],
                         "late40": ["masking.rate=0.4", "masking.insertion=late", "masking.insert_layer=1"]},
            "seeds": [0, 1], "compute": {"equalise": "flops", "estimate_steps": 4}, "evaluations": ["evaluate"],
            "evaluate": {"batches": 2, "batch_size": 8, "pll_sentences": 2}, "baseline": "r15"}
    spec.update(kw)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def spec_file(prepared_data, tmp_path):
    return write_spec(tmp_path / "spec.yaml", prepared_data)
