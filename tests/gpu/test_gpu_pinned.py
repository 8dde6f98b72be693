"""Every candidate row of every autotune table, compiled, on the GPU (`pin_configs`: one row, no tuning),
with NaN-poisoned output buffers so an unwritten row shows; bf16 with q != k lengths; the window over
true positions; the backward run twice is bitwise equal. References: the torch backend in fp32 on the
same (rounded) inputs. Run by stage 2 of benchmarks/gpu_first.sh."""
import numpy as np
import pytest
import torch

from masklab import kernels
from masklab.kernels import triton_attention_bwd, triton_attention_fwd
from masklab.kernels import triton_attention_tiles as T

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class _NaNTorch:
    """The kernels' modules see this as `torch`: torch.empty returns NaN-filled float buffers."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*a, **k):
        t = torch.empty(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t


@pytest.fixture
def poisoned(monkeypatch):
    for mod in (triton_attention_fwd, triton_attention_bwd):
        monkeypatch.setattr(mod, "torch", _NaNTorch())


def _cu(lens):
    return torch.tensor([0] + np.cumsum(lens).tolist(), dtype=torch.int32, device="cuda")


def _check(lq, lk, H, D, dtype, window=None, positions=None, atol=2e-2, gatol=5e-2):
    g = torch.Generator(device="cuda").manual_seed(0)
    cq, ck = _cu(lq), _cu(lk)
    q = torch.randn(sum(lq), H, D, device="cuda", generator=g).to(dtype).requires_grad_()
    k, v = (torch.randn(sum(lk), H, D, device="cuda", generator=g).to(dtype).requires_grad_() for _ in range(2))
    out = kernels.varlen_attention(q, k, v, cq, ck, max(lq), max(lk), window=window, positions=positions,
                                   backend="triton")
    go = torch.randn(out.shape, device="cuda", generator=g).to(dtype)
    grads = torch.autograd.grad(out, (q, k, v), go)
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = kernels.varlen_attention(qf, kf, vf, cq, ck, max(lq), max(lk), window=window, positions=positions,
                                   backend="torch")
    rgrads = torch.autograd.grad(ref, (qf, kf, vf), go.float())
    assert torch.isfinite(out).all() and all(torch.isfinite(x).all() for x in grads), "an unwritten (NaN) row"
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=atol)
    for name, a, b in zip("qkv", grads, rgrads):
        torch.testing.assert_close(a.float(), b, atol=gatol, rtol=gatol, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("row", [0, 1])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_table_row_compiled(poisoned, dtype, D, row):
    hc = T.head_class(D)
    with T.pin_configs(**{name: table[hc][row] for name, table in T.TABLES.items()}):
        _check([1, 17, 130, 300], [1, 17, 130, 300], 2, D, dtype)


def test_bf16_unequal_q_and_k_lengths(poisoned):
    _check([5, 30, 64, 1, 200], [70, 3, 0, 257, 128], 3, 64, torch.bfloat16)


@pytest.mark.parametrize("D", [64, 128])
def test_window_over_positions(poisoned, D):
    """Rows removed from a stream (gapped positions): the window is over true positions."""
    lens = [40, 200, 3]
    pos = torch.cat([torch.sort(torch.randperm(2 * n, device="cuda")[:n]).values for n in lens])
    _check(lens, lens, 2, D, torch.bfloat16, window=32, positions=pos)


def test_backward_twice_is_bitwise_equal():
    g = torch.Generator(device="cuda").manual_seed(1)
    lens = [3, 129, 500]
    cu = _cu(lens)
    q, k, v = (torch.randn(sum(lens), 12, 64, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    go = torch.randn(sum(lens), 12, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    runs = [torch.autograd.grad(kernels.varlen_attention(q, k, v, cu, cu, 500, 500, backend="triton"), (q, k, v), go)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)
