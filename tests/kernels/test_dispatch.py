"""Backend choice per call from (device, dtype, head dim, window): logged once per key, reasons for fallbacks."""
import logging

import pytest
import torch

from masklab.kernels import dispatch

CUDA = torch.device("cuda")


@pytest.fixture
def gpu_box(monkeypatch):
    """Pretend an sm_90 GPU with triton and flash_attn installed (no CUDA call is made)."""
    monkeypatch.setattr(dispatch, "flash_attn_available", lambda: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    monkeypatch.setattr(dispatch, "cuda_capability", lambda device: (9, 0))
    monkeypatch.setattr(dispatch, "_logged", set())


def test_fp32_cuda_attention_never_goes_to_flash_attn(gpu_box, caplog):
    with caplog.at_level(logging.INFO, logger="masklab.kernels"):
        assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.float32, head_dim=64) == "triton"
    assert "fp16/bf16 only" in caplog.text and "fallback" in caplog.text
    assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64) == "flash_attn"
    with pytest.raises(RuntimeError, match="flash_attn cannot run varlen_attention: flash_attn takes fp16/bf16"):
        dispatch.resolve("varlen_attention", CUDA, "flash_attn", dtype=torch.float32, head_dim=64)


def test_window_over_positions_never_goes_to_flash_attn(gpu_box, caplog):
    """flash_attn's window is over row offsets: a window over true positions falls back, logged."""
    with caplog.at_level(logging.INFO, logger="masklab.kernels"):
        assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64, window=128,
                                positions=True) == "triton"
        assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64,
                                positions=True) == "flash_attn"  # no window: positions play no part
    assert "window 128 over positions): triton" in caplog.text and "fallback: flash_attn's window" in caplog.text
    with pytest.raises(RuntimeError, match="flash_attn cannot run varlen_attention: flash_attn's window"):
        dispatch.resolve("varlen_attention", CUDA, "flash_attn", dtype=torch.bfloat16, head_dim=64, window=8,
                         positions=True)


def test_logged_once_per_distinct_key(gpu_box, caplog):
    with caplog.at_level(logging.INFO, logger="masklab.kernels"):
        for _ in range(3):
            dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64)
        dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64, window=128)
        dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=128)
        dispatch.resolve("gather_rows", CUDA, "auto", dtype=torch.bfloat16)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert "head_dim 64, window 128): flash_attn" in lines[1] and "gather_rows" in lines[3]


def test_old_gpus_and_missing_packages_fall_back_with_a_reason(gpu_box, monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "cuda_capability", lambda device: (7, 5))
    with caplog.at_level(logging.INFO, logger="masklab.kernels"):
        assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.float16, head_dim=64) == "torch"
    assert "sm_75" in caplog.text and "fallback" in caplog.text
    monkeypatch.setattr(dispatch, "cuda_capability", lambda device: (8, 0))
    monkeypatch.setattr(dispatch, "flash_attn_available", lambda: False)
    assert dispatch.resolve("varlen_attention", CUDA, "auto", dtype=torch.bfloat16, head_dim=64) == "triton"
    assert "flash_attn is not installed" in caplog.text


def test_flash_attn_setting_for_other_ops_follows_auto_and_says_so(gpu_box, caplog):
    with caplog.at_level(logging.INFO, logger="masklab.kernels"):
        assert dispatch.resolve("masked_token_loss", CUDA, "flash_attn", dtype=torch.bfloat16) == "triton"
        assert dispatch.resolve("masked_token_loss", torch.device("cpu"), "flash_attn", dtype=torch.float32) == "torch"
    assert "requested flash_attn" in caplog.text


def test_bad_backend_and_op_names():
    with pytest.raises(ValueError, match="not one of auto, triton, flash_attn, torch"):
        dispatch.resolve("gather_rows", torch.device("cpu"), "cuda")
    with pytest.raises(ValueError, match="unknown kernel op 'attention'"):
        dispatch.resolve("attention", torch.device("cpu"))
