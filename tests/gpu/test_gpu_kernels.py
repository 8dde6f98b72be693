"""Tests that need CUDA (`make test-gpu`): skipped here with the reason shown in the summary."""
import numpy as np
import pytest
import torch

import kernels

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _pack(lens, H=12, D=64, dtype=torch.bfloat16):
    cu = torch.tensor([0] + np.cumsum(lens).tolist(), dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(int(cu[-1]), H, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    return q, k, v, cu, max(lens)


@pytest.mark.parametrize("window", [None, 128])
@pytest.mark.parametrize("D", [32, 64, 128])
def test_attention_bf16_gpu_tolerance(D, window):
    q, k, v, cu, L = _pack([1, 17, 128, 300, 513], D=D)
    out = kernels.varlen_attention(q, k, v, cu, cu, L, L, window=window, backend="triton")
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = kernels.varlen_attention(qf, kf, vf, cu, cu, L, L, window=window, backend="torch")
    rgrads = torch.autograd.grad(ref, (qf, kf, vf), g.float())
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    for a, b in zip(grads, rgrads):
        torch.testing.assert_close(a.float(), b, atol=5e-2, rtol=5e-2)


def test_model_loss_triton_vs_torch(prepared_data):
    from data_prep import ShardSet
    from masklab.config import load_config
    from pretrain.data import Collator
    from pretrain.model import build_model

    cfg = load_config("configs/smoke_gpu.yaml", [f"data.shards={prepared_data}", "model.hidden_dropout=0"])
    shards = ShardSet(prepared_data)
    b = Collator(cfg, shards)(np.arange(32), 0).to("cuda")
    model = build_model(cfg.model, shards.tokenizer).cuda()
    losses = {}
    for be in ("torch", "triton"):
        kernels.set_backend(be)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses[be] = float(model(b)["loss_sum"])
    kernels.set_backend("auto")
    assert abs(losses["torch"] - losses["triton"]) / losses["torch"] < 2e-2


def test_smoke_training_run_on_gpu(tiny_overrides):
    from masklab.config import load_config
    from pretrain.train import train

    ov = [o for o in tiny_overrides if o != "train.device=cpu"]
    r = train(load_config("configs/smoke_gpu.yaml", ov + ["train.max_steps=30", "train.eval_every=30"]))
    assert r["step"] == 30 and r["last"]["eval_loss"] < r["first_eval"]["loss"]
