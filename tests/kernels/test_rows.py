"""Row gather / scatter / late-mask insertion: Triton (interpreter) vs the torch references.

Copies are exact (bitwise, fp32 and bf16); gather's backward adds duplicates in fp32 and
rounds once, so bf16 gradients with duplicates are compared at bf16 resolution (rtol 1e-2).
"""
import pytest
import torch

from masklab import kernels
from masklab.kernels.insert import insert_masks_torch
from masklab.kernels.rows import gather_rows_torch, scatter_rows_torch


def _pair(name, *args):
    return getattr(kernels, name)(*args, backend="triton"), getattr(kernels, name)(*args, backend="torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(20, 8), (20, 3, 8), (40, 1100)])  # 1100 columns: two column blocks
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_gather_forward_and_backward_adds_duplicates(dtype, shape, index_dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype).requires_grad_()
    idx = torch.tensor([5, 0, 19, 5, 7, 5], dtype=index_dtype)
    a, b = _pair("gather_rows", x, idx)
    assert torch.equal(a, b)
    gy = torch.randn(a.shape, generator=g).to(dtype)
    ga, gb = torch.autograd.grad(a, x, gy)[0], torch.autograd.grad(b, x, gy)[0]
    assert ga.dtype == dtype
    torch.testing.assert_close(ga, gb, atol=1e-2 if dtype == torch.bfloat16 else 1e-6, rtol=1e-2)
    assert not ga[[1, 2, 3]].any()  # rows never gathered get no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scatter_forward_and_backward(dtype):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 2, 8, generator=g).to(dtype).requires_grad_()
    u = torch.tensor([4, 0, 9])
    a, b = _pair("scatter_rows", y, u, 12)
    assert torch.equal(a, b) and a.shape == (12, 2, 8) and not a[[1, 2, 3, 5]].any()
    gy = torch.randn(a.shape, generator=g).to(dtype)
    assert torch.equal(torch.autograd.grad(a, y, gy)[0], torch.autograd.grad(b, y, gy)[0])


def test_empty_index():
    x = torch.randn(6, 4, requires_grad=True)
    a = kernels.gather_rows(x, torch.zeros(0, dtype=torch.int64), backend="triton")
    assert a.shape == (0, 4)
    (gx,) = torch.autograd.grad(a.sum(), x)
    assert not gx.any()
    s = kernels.scatter_rows(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 5, backend="triton")
    assert torch.equal(s, torch.zeros(5, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_insert_masks(dtype):
    g = torch.Generator().manual_seed(2)
    T = 50
    perm = torch.randperm(T, generator=g)
    vis, ins = perm[:37].sort().values, perm[37:]
    v = torch.randn(37, 24, generator=g).to(dtype).requires_grad_()
    m = torch.randn(13, 24, generator=g).to(dtype).requires_grad_()
    a, b = _pair("insert_masks", v, vis, ins, m, T)
    assert torch.equal(a, b) and torch.equal(a[ins], m) and torch.equal(a[vis], v)
    gy = torch.randn(T, 24, generator=g).to(dtype)
    for ga, gb in zip(torch.autograd.grad(a, (v, m), gy), torch.autograd.grad(b, (v, m), gy)):
        assert torch.equal(ga, gb)


def test_insert_with_nothing_inserted():
    v = torch.randn(5, 4)
    a = kernels.insert_masks(v, torch.arange(5), torch.zeros(0, dtype=torch.int64), v[:0], 5, backend="triton")
    assert torch.equal(a, v)


def test_reference_gradcheck_float64():
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([2, 2, 6, 0])
    assert torch.autograd.gradcheck(lambda t: gather_rows_torch(t, idx), (x,))
    assert torch.autograd.gradcheck(lambda t: scatter_rows_torch(t, idx[1:], 9), (x[:3].detach().requires_grad_(),))
    v, m = (torch.randn(n, 3, dtype=torch.float64, requires_grad=True) for n in (3, 2))
    assert torch.autograd.gradcheck(
        lambda a, b: insert_masks_torch(a, torch.tensor([0, 3, 4]), torch.tensor([2, 1]), b, 5), (v, m))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_rows_bad_input(backend):
    x = torch.randn(5, 4)
    with pytest.raises(IndexError, match="out of range"):
        kernels.gather_rows(x, torch.tensor([5]), backend=backend)
    with pytest.raises(IndexError, match="out of range"):
        kernels.gather_rows(x, torch.tensor([-1]), backend=backend)
    with pytest.raises(TypeError, match="int64 or int32"):
        kernels.gather_rows(x, torch.tensor([1.0]), backend=backend)
    with pytest.raises(ValueError, match="1-D"):
        kernels.gather_rows(x, torch.tensor([[1]]), backend=backend)
    with pytest.raises(ValueError, match="rows but x has"):
        kernels.scatter_rows(x, torch.tensor([0, 1]), 9, backend=backend)
    with pytest.raises(IndexError, match="out of range"):
        kernels.scatter_rows(x[:1], torch.tensor([9]), 9, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_insert_bad_input(backend):
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="total tokens"):
        kernels.insert_masks(x, torch.arange(5), torch.tensor([5]), x[:1], 5, backend=backend)
    with pytest.raises(TypeError, match="share dtype"):
        kernels.insert_masks(x, torch.arange(5), torch.tensor([5]), x[:1].double(), 6, backend=backend)
    with pytest.raises(ValueError, match=r"\[\*, D\]"):
        kernels.insert_masks(x, torch.arange(5), torch.tensor([5]), x[:1, :3], 6, backend=backend)
    with pytest.raises(IndexError, match="insert_positions out of range"):
        kernels.insert_masks(x, torch.arange(5), torch.tensor([6]), x[:1], 6, backend=backend)


def test_pad_unpad_round_trip_through_triton():
    x = torch.randn(3, 7, 4, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1, 1, 0, 0, 0, 0, 0], [1] * 4 + [0] * 3])
    rows, idx, cu, mx = kernels.unpad_input(x, mask, backend="triton")
    assert rows.shape == (13, 4) and cu.tolist() == [0, 7, 9, 13] and mx == 7
    back = kernels.pad_input(rows, idx, 3, 7, backend="triton")
    assert torch.equal(back, x * mask[..., None])
    (gx,) = torch.autograd.grad(back.sum(), x)
    assert torch.equal(gx, mask[..., None].expand_as(x).float())
