"""Fused masked-token loss and row kernels: Triton (interpreter) and chunked torch vs references."""
import pytest
import torch

import kernels
from kernels.mlm_loss import masked_token_loss_torch
from kernels.triton_mlm_loss import masked_token_loss_chunked_torch


def setup(T=50, D=32, V=300, M=14, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, D, generator=g).to(dtype).requires_grad_()
    pos = torch.randperm(T, generator=g)[:M].sort().values
    lab = torch.randint(0, V, (M,), generator=g)
    lab[min(3, M - 1)] = -100  # bucket padding is ignored
    dense = (torch.randn(D, D, generator=g) * 0.2).to(dtype).requires_grad_()
    dense_b = (torch.randn(D, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    ln_w = (1 + 0.1 * torch.randn(D, generator=g)).to(dtype).requires_grad_()
    ln_b = (0.1 * torch.randn(D, generator=g)).to(dtype).requires_grad_() if bias else None
    W = (torch.randn(V, D, generator=g) * 0.3).to(dtype).requires_grad_()
    b = (torch.randn(V, generator=g) * 0.1).to(dtype).requires_grad_()
    return (h, pos, lab, dense, dense_b, ln_w, ln_b, W, b)


def run(fn, args, **kw):
    loss, nc = fn(*args, **kw)
    params = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return loss, nc, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [64, 4096])
def test_fused_loss_fp32(bias, chunk):
    args = setup(bias=bias)
    ref = run(masked_token_loss_torch, args)
    for fn in (lambda *a: kernels.masked_token_loss(*a, backend="triton"),
               lambda *a: masked_token_loss_chunked_torch(*a, vocab_chunk=chunk)):
        out = run(fn, args)
        torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-5)
        assert int(out[1]) == int(ref[1])
        for a, b in zip(out[2], ref[2]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_fused_loss_bf16_tolerance():
    args = setup(dtype=torch.bfloat16)
    ref = run(masked_token_loss_torch, [a.detach().float().requires_grad_() if isinstance(a, torch.Tensor) and
                                        a.is_floating_point() else a for a in args])
    out = run(lambda *a: kernels.masked_token_loss(*a, backend="triton"), args)
    torch.testing.assert_close(out[0].float(), ref[0], atol=0.5, rtol=2e-2)  # summed over M: stated 2%
    for a, b in zip(out[2], ref[2]):
        torch.testing.assert_close(a.float(), b, atol=5e-2, rtol=5e-2)


def test_accuracy_counts_argmax_hits():
    h, pos, lab, *rest = setup(V=64)
    W = rest[-2].detach().clone()
    x = kernels.mlm_loss.head_transform(h[pos], *rest[:4], 1e-12)
    lab = (x @ W.t() + rest[-1]).argmax(-1).detach()
    lab[0] = (lab[0] + 1) % 64
    _, nc = kernels.masked_token_loss(h, pos, lab, *rest[:4], W, rest[-1], backend="triton")
    assert int(nc) == len(lab) - 1


def test_reference_gradcheck_float64():
    args = [a.double().detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in setup(T=6, D=4, V=7, M=3)]
    h, pos, lab, *rest = args
    assert torch.autograd.gradcheck(lambda h_, w_: masked_token_loss_torch(h_, pos, lab, *rest[:4], w_, rest[-1])[0],
                                    (h, rest[-2]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_loss_bad_input(backend):
    h, pos, lab, *rest = setup()
    with pytest.raises(IndexError, match="out of range"):
        kernels.masked_token_loss(h, pos + 1000, lab, *rest, backend=backend)
    with pytest.raises(TypeError, match="int64"):
        kernels.masked_token_loss(h, pos.int(), lab, *rest, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_and_insert(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, 8, generator=g).to(dtype).requires_grad_()
    idx = torch.tensor([5, 0, 19, 5, 7])
    for name in ("gather_rows",):
        a = getattr(kernels, name)(x, idx, backend="triton")
        b = getattr(kernels, name)(x, idx, backend="torch")
        gy = torch.randn(a.shape, generator=g).to(dtype)
        assert torch.equal(a, b)
        torch.testing.assert_close(torch.autograd.grad(a, x, gy)[0], torch.autograd.grad(b, x, gy)[0])
    u = torch.tensor([4, 0, 9])
    y = torch.randn(3, 8, generator=g).to(dtype).requires_grad_()
    a, b = kernels.scatter_rows(y, u, 12, backend="triton"), kernels.scatter_rows(y, u, 12, backend="torch")
    assert torch.equal(a, b)
    vis, ins = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4])
    v = torch.randn(4, 8, generator=g).to(dtype).requires_grad_()
    m = torch.randn(2, 8, generator=g).to(dtype).requires_grad_()
    a = kernels.insert_masks(v, vis, ins, m, 6, backend="triton")
    b = kernels.insert_masks(v, vis, ins, m, 6, backend="torch")
    assert torch.equal(a, b) and torch.equal(a[ins], m) and torch.equal(a[vis], v)
    gy = torch.randn(6, 8, generator=g).to(dtype)
    for ga, gb in zip(torch.autograd.grad(a, (v, m), gy), torch.autograd.grad(b, (v, m), gy)):
        assert torch.equal(ga, gb)


def test_rows_bad_input():
    x = torch.randn(5, 4)
    with pytest.raises(IndexError, match="out of range"):
        kernels.gather_rows(x, torch.tensor([5]), backend="triton")
    with pytest.raises(ValueError, match="total tokens"):
        kernels.insert_masks(x, torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5]), x[:1], 5, backend="triton")


def test_pad_unpad_round_trip():
    x = torch.randn(3, 7, 4)
    mask = torch.tensor([[1] * 7, [1, 1, 0, 0, 0, 0, 0], [1] * 4 + [0] * 3])
    rows, idx, cu, mx = kernels.unpad_input(x, mask)
    assert rows.shape == (13, 4) and cu.tolist() == [0, 7, 9, 13] and mx == 7
    back = kernels.pad_input(rows, idx, 3, 7)
    assert torch.equal(back, x * mask[..., None])
