"""What a resume must keep of the masking: the algorithm version and the schedule's length."""
import pytest

from masklab.config import load_config
from masklab.errors import MaskLabError
from masklab.pretrain.loop import distributed as D
from masklab.pretrain.loop.resume import check_resume_compatible, resume_compat


def _compat(data, *ov):
    return resume_compat(load_config("configs/smoke_cpu.yaml", [f"data.shards={data}", *ov]), D.world_from_env(),
                         "torch", "sha")


def test_run_of_the_previous_masking_algorithm_is_refused(prepared_data):
    now = _compat(prepared_data)
    assert now["masking.algorithm"] == 3
    with pytest.raises(MaskLabError, match="masking.algorithm: checkpoint 2 vs now 3"):
        check_resume_compatible({"compat": {**now, "masking.algorithm": 2}}, now)


def test_extending_max_steps_under_a_rate_schedule_is_refused_unless_pinned(prepared_data):
    saved = {"compat": _compat(prepared_data, "+masking/linear_schedule", "train.max_steps=10")}
    with pytest.raises(MaskLabError, match="masking.schedule_length: checkpoint 10 vs now 20.*pin masking.schedule_steps"):
        check_resume_compatible(saved, _compat(prepared_data, "+masking/linear_schedule", "train.max_steps=20"))
    check_resume_compatible(saved, _compat(prepared_data, "+masking/linear_schedule", "train.max_steps=20",
                                           "masking.schedule_steps=10"))
    constant = {"compat": _compat(prepared_data, "train.max_steps=10")}  # a constant rate does not depend on it
    check_resume_compatible(constant, _compat(prepared_data, "train.max_steps=20"))
