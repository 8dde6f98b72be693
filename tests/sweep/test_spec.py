"""Sweep spec, cells and statistics: bad specs are one clear error; equal compute holds; intervals are right."""
import math

import pytest

from masklab.errors import ConfigError
from masklab.sweep.cells import plan_cells, variants
from masklab.sweep.spec import load_spec
from masklab.sweep.stats import paired_difference, t_interval, verdict
from tests.sweep.conftest import write_spec


@pytest.mark.parametrize("kw,msg", [
    ({"evaluations": ["nomodule.here:fn"]}, "evaluation plug-in 'nomodule.here:fn' cannot be loaded"),
    ({"evaluations": ["bleu"]}, "evaluation 'bleu' is not one of evaluate, detection, minimal_pairs, glue"),
    ({"evaluations": ["nosuch.module:fn"]}, "plug-in 'nosuch.module:fn' cannot be loaded"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"compute": {"equalise": "joules"}}, "compute.equalise='joules' is not one of steps, tokens, flops, none"),
    ({"typo_key": 1}, "typo_key"),
    ({"seeds": "abc"}, "seeds"),
    ({"variants": {}, "grid": {}}, "at least one variant"),
    ({"untrained_variants": ["r15"]}, "evaluate need one"),
])
def test_bad_specs_are_one_clear_error(tmp_path, prepared_data, kw, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_spec(write_spec(tmp_path / "s.yaml", prepared_data, **kw))


def test_grid_crossed_with_named_sets(tmp_path, prepared_data):
    spec = load_spec(write_spec(tmp_path / "s.yaml", prepared_data, grid={"masking.unit": ["token", "span"]}))
    names = [n for n, _ in variants(spec)]
    assert names == ["r15/masking.unit=token", "r15/masking.unit=span", "late40/masking.unit=token",
                     "late40/masking.unit=span"]


def test_equal_flops_and_tokens_and_stable_hashes(tmp_path, prepared_data):
    """FLOPs equalisation gives late insertion at 40% (bigger head, smaller lower layers) other
    steps than the reference; every cell's planned FLOPs are within one step of the budget; the
    plan (and so every cell directory) is the same when planned again."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", prepared_data, seeds=[0]))
    cells = plan_cells(spec, tmp_path / "a")
    ref = cells[0]
    budget = ref.max_steps * ref.flops_per_step
    for c in cells:
        assert c.max_steps * c.flops_per_step >= budget * (1 - 1e-9)
        assert (c.max_steps - 1) * c.flops_per_step < budget
    assert cells[0].max_steps != cells[1].max_steps
    spec2 = load_spec(write_spec(tmp_path / "s2.yaml", prepared_data, seeds=[0], compute={"equalise": "tokens", "estimate_steps": 4}))
    tok = plan_cells(spec2, tmp_path / "b")
    assert all(c.max_steps * c.tokens_per_step >= tok[0].max_steps * tok[0].tokens_per_step * (1 - 1e-9) for c in tok)
    again = plan_cells(load_spec(write_spec(tmp_path / "s3.yaml", prepared_data, seeds=[0])), tmp_path / "c")
    assert [c.hash for c in again] == [c.hash for c in cells]


def test_t_interval_and_paired_verdicts():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert iv.mean == 2.0 and math.isclose(iv.hi - 2.0, 4.302653 / math.sqrt(3), rel_tol=1e-5)
    base = {0: 1.0, 1: 2.0, 2: 3.0}
    better = paired_difference({0: 1.5, 1: 2.6, 2: 3.4}, base)  # per-seed +0.5, +0.6, +0.4: tight
    assert better.lo > 0 and verdict(better, lower_is_better=False) == "better"
    assert verdict(better, lower_is_better=True) == "worse"
    noisy = paired_difference({0: 1.5, 1: 1.6, 2: 3.4}, base)
    assert verdict(noisy, lower_is_better=False) == "within noise"
    assert verdict(paired_difference({0: 2.0}, {0: 1.0}), False).startswith("n/a")
    assert verdict(paired_difference({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}), False) == "no spread over seeds"
