"""GPU readiness on a CPU machine: production kernel configs compile for sm_90 without spills."""
import os
import subprocess
import sys

import pytest

from kernels import gpu_check
from masklab.errors import MaskLabError


def _cli(*args):
    # the check compiles real kernels, so it runs without the interpreter the other tests use
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "masklab.cli", "gpu-check", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_every_production_config_compiles_for_h100_and_a100_without_spills():
    r = _cli("--target", "sm_90", "sm_80", "--jobs", "2")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 failing" in r.stdout
    for kernel in ("attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq", "mlm_ce_fwd", "mlm_ce_bwd", "rows_copy"):
        assert f"| sm_90 | {kernel} |" in r.stdout
    assert any("| attn_fwd |" in line and "| yes |" in line for line in r.stdout.splitlines())  # wgmma on Hopper


def test_interpreter_mode_is_refused_clearly():
    with pytest.raises(MaskLabError, match="unset TRITON_INTERPRET"):
        gpu_check.run_checks(("sm_90",), subset=True)


def test_every_shipped_attention_config_is_listed():
    from kernels import triton_attention as A

    jobs = gpu_check._jobs(subset=False)
    for hc, cfgs in A.FWD_CONFIGS.items():
        for m, n, w, s in cfgs:
            assert any(j["kernel"] == "attn_fwd" and j["const"]["BLOCK_M"] == m and j["const"]["BLOCK_N"] == n
                       and j["warps"] == w for j in jobs)


def test_unsupported_target_is_a_clear_error():
    r = _cli("--target", "sm_50")
    assert r.returncode == 2 and "unsupported gpu-check target 'sm_50'" in r.stderr


def test_spill_reporting_and_allow_list():
    r = gpu_check.Result("attn_fwd", "sm_90", "fp32 d64", "64x64 w4 s3", ok=True, spill_bytes=8)
    assert gpu_check.failures([r]) == [r]
    r.allowed = "reason"
    assert gpu_check.failures([r]) == []
    assert "allowed: reason" in gpu_check.table([r])
