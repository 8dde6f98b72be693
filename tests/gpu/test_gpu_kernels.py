"""Tests that need CUDA (`make test-gpu`): skipped here with the reason shown in the summary."""
import numpy as np
import pytest
import torch

from masklab import kernels

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _pack(lens, H=12, D=64, dtype=torch.bfloat16):
    cu = torch.tensor([0] + np.cumsum(lens).tolist(), dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(int(cu[-1]), H, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    return q, k, v, cu, max(lens)


@pytest.mark.parametrize("D,window", [(32, None), (64, None), (128, None), (64, 128)])  # autotuned (every row:
def test_attention_bf16_gpu_tolerance(D, window):  # test_gpu_pinned.py)
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


@pytest.mark.parametrize("window", [None, 64])
def test_attention_unequal_lengths_gpu(window):
    """q and k lengths differ per sequence, one sequence has no keys; fp32 in, tf32 dots on GPU.
    (No query is past its keys' window: the torch reference mishandles those, see test_attention.py.)"""
    lq, lk = [5, 30, 64, 1], [70, 3, 0, 257]
    cq, ck = (torch.tensor([0] + np.cumsum(x).tolist(), dtype=torch.int32, device="cuda") for x in (lq, lk))
    q = torch.randn(sum(lq), 4, 64, device="cuda", requires_grad=True)
    k, v = (torch.randn(sum(lk), 4, 64, device="cuda", requires_grad=True) for _ in range(2))
    out = kernels.varlen_attention(q, k, v, cq, ck, max(lq), max(lk), window=window, backend="triton")
    ref = kernels.varlen_attention(q, k, v, cq, ck, max(lq), max(lk), window=window, backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_loss_gpu(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    T, D, V, M = 4000, 256, 30522, 600

    def t(*shape, scale=0.05):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype).requires_grad_()

    h = t(T, D, scale=1.0)
    pos = torch.randperm(T, device="cuda", generator=g)[:M]
    lab = torch.randint(0, V, (M,), device="cuda", generator=g)
    lab[::7] = -100
    params = [t(D, D), t(D), (torch.ones(D, device="cuda", dtype=dtype)).requires_grad_(), t(D), t(V, D), t(V)]
    res = {}
    for be in ("triton", "torch"):
        loss, nc = kernels.masked_token_loss(h, pos, lab, *params, backend=be)
        res[be] = (loss, int(nc), torch.autograd.grad(loss, [h, *params]))
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3  # fp32: tf32 GEMMs may differ between the two paths
    torch.testing.assert_close(res["triton"][0], res["torch"][0], atol=tol * 10, rtol=tol)
    assert abs(res["triton"][1] - res["torch"][1]) <= 2  # argmax ties can break differently across GEMMs
    for a, b in zip(res["triton"][2], res["torch"][2]):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=5 * tol)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_fused_loss_backward_under_autocast_gpu(backend):
    """fp32 master weights, forward under CUDA autocast (layer_norm hands fp32 to the decoder), backward
    outside it as in training: loss and grads match fp32 on the same bf16-rounded inputs."""
    g = torch.Generator(device="cuda").manual_seed(1)
    T, D, V, M = 2000, 256, 30522, 300

    def t(*shape, scale=0.05):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).bfloat16().float().requires_grad_()

    h = t(T, D, scale=1.0)
    pos = torch.randperm(T, device="cuda", generator=g)[:M]
    lab = torch.randint(0, V, (M,), device="cuda", generator=g)
    params = [t(D, D), t(D), torch.ones(D, device="cuda", requires_grad=True), t(D), t(V, D), t(V)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = kernels.masked_token_loss(h, pos, lab, *params, backend=backend)
    grads = torch.autograd.grad(loss, [h, *params])
    torch.backends.cuda.matmul.allow_tf32, tf32 = False, torch.backends.cuda.matmul.allow_tf32
    try:
        ref, _ = kernels.masked_token_loss(h, pos, lab, *params, backend="torch")
        rgrads = torch.autograd.grad(ref, [h, *params])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close(loss, ref, atol=0.5, rtol=1e-2)
    for a, b in zip(grads, rgrads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_gpu(dtype):
    x = torch.randn(5000, 768, device="cuda", dtype=dtype, requires_grad=True)
    idx = torch.randint(0, 5000, (3000,), device="cuda")  # duplicates: the backward adds
    a, b = (kernels.gather_rows(x, idx, backend=be) for be in ("triton", "torch"))
    assert torch.equal(a, b)
    gy = torch.randn_like(a)
    torch.testing.assert_close(torch.autograd.grad(a, x, gy)[0].float(), torch.autograd.grad(b, x, gy)[0].float(),
                               atol=2e-2, rtol=2e-2)
    perm = torch.randperm(5000, device="cuda")
    vis, ins = perm[:4000], perm[4000:]
    out = kernels.insert_masks(x[:4000], vis, ins, x[4000:], 5000, backend="triton")
    assert torch.equal(out, kernels.insert_masks(x[:4000], vis, ins, x[4000:], 5000, backend="torch"))


def test_model_loss_triton_vs_torch(prepared_data):
    """The model built with backend="auto" follows set_backend: torch, then Triton, on the same batch,
    loss and every gradient (tests/kernels/test_model_backends.py proves this comparison fails when the Triton path is broken)."""
    from masklab.data_prep import ShardSet
    from masklab.config import load_config
    from masklab.pretrain.data.collator import Collator
    from masklab.pretrain.model import build_model
    from tests.gpu.compare import assert_runs_agree, model_runs

    cfg = load_config("configs/smoke_gpu.yaml", [f"data.shards={prepared_data}", "model.hidden_dropout=0"])
    shards = ShardSet(prepared_data)
    b = Collator(cfg, shards)(np.arange(32), 0).to("cuda")
    model = build_model(cfg.model, shards.tokenizer, backend="auto").cuda()
    assert_runs_agree(model_runs(model, b, autocast=torch.bfloat16), rtol=2e-2, grad_rtol=5e-2)


def test_smoke_training_run_on_gpu(tiny_overrides):
    from masklab.config import load_config
    from masklab.pretrain.loop.train import train

    ov = [o for o in tiny_overrides if o != "train.device=cpu"]
    r = train(load_config("configs/smoke_gpu.yaml", ov + ["train.max_steps=30", "train.eval_every=30"]))
    assert r["step"] == 30 and r["last"]["eval_loss"] < r["first_eval"]["loss"]
