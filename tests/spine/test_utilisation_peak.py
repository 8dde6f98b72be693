"""Utilisation's denominators (issue 31 item 9): an 8192^3 matmul in the training dtype on CUDA, the
cheap 1024^3 probe on CPU, and the spec sheet's peak on known GPUs. No GPU needed: the device name and
the matmul probe are mocked, only the selection is tested."""
from types import SimpleNamespace

import pytest
import torch

from masklab.pretrain.loop import run_state
from masklab.pretrain.loop.peak import spec_peak_flops


def _run(device, precision="bf16"):
    return SimpleNamespace(device=torch.device(device), cfg=SimpleNamespace(train=SimpleNamespace(precision=precision)))


@pytest.fixture
def probe(monkeypatch):
    calls = []

    def fake(device, dtype=torch.float32, n=1024, reps=3):
        calls.append((device.type, dtype, n, reps))
        return 123e12

    monkeypatch.setattr(run_state, "matmul_peak_flops", fake)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    return calls


def test_cuda_measures_8192_cubed_in_bf16_and_knows_the_spec_peak(probe):
    peak = run_state.utilisation_peak(_run("cuda"))
    assert probe == [("cuda", torch.bfloat16, 8192, 5)]
    assert peak.measured == 123e12 and peak.spec == pytest.approx(989.4e12) and peak.probe_n == 8192


def test_cuda_fp32_probe_and_tf32_spec(probe):
    peak = run_state.utilisation_peak(_run("cuda", "fp32"))
    assert probe == [("cuda", torch.float32, 8192, 5)] and peak.spec == pytest.approx(989.4e12 / 2)


def test_cpu_keeps_the_cheap_probe_and_has_no_spec_peak(probe):
    peak = run_state.utilisation_peak(_run("cpu"))
    assert probe == [("cpu", torch.float32, 1024, 3)] and peak.spec is None


@pytest.mark.parametrize("name,flops", [("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989.4e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12), ("Some Future GPU", None)])
def test_spec_peak_by_device_name(monkeypatch, name, flops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert spec_peak_flops(torch.device("cuda"), torch.bfloat16) == (pytest.approx(flops) if flops else None)
