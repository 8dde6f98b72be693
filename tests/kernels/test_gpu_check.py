"""GPU readiness on a CPU machine: production kernel configs compile for sm_90 / sm_80 without spills.

The compile test runs the representative `--subset` (bf16, head dims 64 and 128, every shipped
block config of every kernel, both targets: about 20 s cold on 2 cores, 36 compiles); the full
list (`masklab gpu-check`, ~250 compiles, ~3.5 min cold) adds fp16/fp32, d32 and windowed variants.
"""
import os
import re
import subprocess
import sys

import pytest

from masklab.kernels import gpu_check
from masklab.errors import MaskLabError


def _cli(*args):
    # the check compiles real kernels, so it runs without the interpreter the other tests use
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import sys; from masklab.kernels.gpu_check import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)


def test_shipped_configs_compile_for_h100_and_a100_without_spills(tmp_path):
    out = tmp_path / "table.md"
    r = _cli("--target", "sm_90", "sm_80", "--subset", "--jobs", "2", "--out", str(out))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 failing" in r.stdout and out.read_text().startswith("| target |")
    for target in ("sm_90", "sm_80"):
        for kernel in ("attn_fwd", "attn_bwd_pre", "attn_bwd_dkdv", "attn_bwd_dq", "mlm_ce_fwd", "mlm_ce_bwd",
                       "rows_copy", "rows_copy_atomic"):
            assert f"| {target} | {kernel} |" in r.stdout, kernel
    # Hopper gets wgmma in every attention config (a missing one is a failure of the check)
    attn = [line for line in r.stdout.splitlines() if line.startswith("| sm_90 | attn_") and "attn_bwd_pre" not in line]
    assert len(attn) >= 12 and all("| yes |" in line for line in attn), attn


def test_subset_covers_every_shipped_attention_config():
    from masklab.kernels import triton_attention_tiles as T

    for subset in (True, False):
        jobs = gpu_check._jobs(subset=subset)
        tables = (("attn_fwd", T.FWD_CONFIGS), ("attn_bwd_dkdv", T.BWD_DKDV_CONFIGS), ("attn_bwd_dq", T.BWD_DQ_CONFIGS))
        for kernel, table in tables:
            for hc, cfgs in table.items():
                for m, n, w, s in cfgs:
                    assert any(j["kernel"] == kernel and j["const"]["BLOCK_M"] == m and j["const"]["BLOCK_N"] == n
                               and j["warps"] == w and j["stages"] == s and j["const"]["HEAD_DIM"] == hc for j in jobs)
    full = gpu_check._jobs(subset=False)
    assert {j["variant"].split()[0] for j in full} == {"bf16", "fp16", "fp32"}
    assert {j["const"].get("HEAD_DIM") for j in full} >= {32, 64, 128}


def test_signatures_match_the_kernels():
    """A job's signature names every runtime argument of its kernel (what a kernel edit could break)."""
    for j in gpu_check._jobs(subset=False):
        fn = j["fn"].fn if hasattr(j["fn"], "fn") else j["fn"]
        names = [a for a in j["fn"].arg_names if a not in j["const"]]
        assert set(names) == set(j["sig"]), (j["kernel"], set(names) ^ set(j["sig"]), fn.__name__)


def test_signatures_use_the_runtime_argument_types():
    """Triton passes ints < 2^31 as i32 and specialises pointers / multiples of 16 on divisibility."""
    for j in gpu_check._jobs(subset=True):
        assert "i64" not in j["sig"].values(), j["kernel"]
        for name, t in j["sig"].items():
            hinted = (j["fn"].arg_names.index(name),) in j["attrs"]
            assert hinted == (t.startswith("*") or name in gpu_check.DIVISIBLE_INTS), (j["kernel"], name)


def test_missing_wgmma_fails_the_check():
    r = gpu_check.Result("attn_bwd_dq", "sm_90", "bf16 d128", "64x32 w8 s2", ok=True, wgmma=False)
    assert gpu_check.failures([r]) == [r] and "FAIL: no wgmma" in gpu_check.table([r])
    for other in (gpu_check.Result("attn_bwd_dq", "sm_80", "bf16 d128", "64x32 w8 s2", ok=True),
                  gpu_check.Result("attn_bwd_dq", "sm_90", "fp32 d128", "64x32 w8 s2", ok=True),
                  gpu_check.Result("mlm_ce_fwd", "sm_90", "bf16", "16x128 w4 s2", ok=True)):
        assert gpu_check.failures([other]) == []


def test_interpreter_mode_is_refused_clearly():
    with pytest.raises(MaskLabError, match="unset TRITON_INTERPRET"):
        gpu_check.run_checks(("sm_90",), subset=True)


@pytest.mark.parametrize("target", ["sm_50", "foo"])
def test_unsupported_target_is_a_clear_error(target):
    with pytest.raises(MaskLabError, match=f"unsupported gpu-check target '{target}'"):
        gpu_check.run_checks((target,))


def test_unsupported_target_from_the_cli():
    r = _cli("--target", "sm_50")
    assert r.returncode == 2 and "unsupported gpu-check target 'sm_50'" in (r.stderr + r.stdout)


def test_spill_reporting_and_allow_list():
    r = gpu_check.Result("attn_fwd", "sm_90", "bf16 d64", "64x64 w4 s3", ok=True, spill_bytes=8, wgmma=True)
    assert gpu_check.failures([r]) == [r]
    r.allowed = "reason"
    assert gpu_check.failures([r]) == []
    assert "allowed: reason" in gpu_check.table([r])
    bad = gpu_check.Result("attn_fwd", "sm_90", "bf16 d64", "64x64 w4 s3", ok=False, error="CompilationError: x")
    assert gpu_check.failures([bad]) == [bad] and "FAIL: CompilationError" in gpu_check.table([bad])
    # fp32 attention is on the allow-list (a debugging path); bf16 is not
    for variant, allowed in (("fp32 d128", True), ("bf16 d128", False)):
        key = f"attn_fwd|{variant}|64x64 w8 s2"
        assert any(re.search(p, key) for p in gpu_check.ALLOWED_SPILLS) == allowed
