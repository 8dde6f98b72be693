"""The CPU torch path of varlen attention (per-sequence views, windowed layers in query blocks)
equals the single padded batch: outputs and gradients, unequal q / k lengths, empty sequences,
queries that see no key, windows narrower and wider than the sequences."""
import pytest
import torch

from masklab.kernels.attention import varlen_attention_torch
from tests.kernels.test_attention import naive_attention, pack

CASES = [([5, 40, 1, 0, 17, 33, 2, 9, 12], [5, 40, 3, 0, 17, 30, 2, 1, 12]),  # mixed, empty, q != k lengths
         ([10], [2]),  # rows 3.. of the query see no key under window 2
         ([200, 70], [200, 70])]  # several query blocks per sequence


@pytest.mark.parametrize("window", [None, 2, 6, 32, 128])
@pytest.mark.parametrize("lq,lk", CASES)
def test_cpu_path_equals_one_padded_batch(lq, lk, window):
    q, k, v, cq, ck, mq, mk = pack(lq, lk, 2, 16, torch.float64)
    w = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = varlen_attention_torch(q, k, v, cq, ck, mq, mk, window=window)
    ref = varlen_attention_torch(q, k, v, cq, ck, mq, mk, window=window, buckets=1)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, naive_attention(q, k, v, cq, ck, window=window), atol=1e-12, rtol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), w), torch.autograd.grad(ref, (q, k, v), w)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_cpu_path_gathers_and_scatters_nothing():
    """No padded copies in either direction (they took a visible share of short-input steps)."""
    from torch.profiler import profile

    q, k, v, cq, ck, mq, mk = pack([64, 30, 64], [64, 30, 64], 2, 16)
    with profile() as prof:
        varlen_attention_torch(q, k, v, cq, ck, mq, mk).sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert not ops & {"aten::index_select", "aten::index_copy", "aten::index_add_", "aten::new_zeros"}, ops


@pytest.mark.parametrize("window", [None, 2, 32])
@pytest.mark.parametrize("lq,lk", CASES)
def test_device_path_equals_reference_and_reads_nothing_back(lq, lk, window, monkeypatch):
    """The non-CPU default (`padded_on_device`, run here on CPU tensors) equals the reference in
    outputs and gradients, and never reads a tensor back to the host (a GPU step stays sync-free)."""
    from masklab.kernels.attention import padded_on_device

    q, k, v, cq, ck, mq, mk = pack(lq, lk, 2, 16, torch.float64)
    w = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = varlen_attention_torch(q, k, v, cq, ck, mq, mk, window=window, buckets=1)
    reads = []
    for name in ("item", "cpu", "tolist", "__bool__", "__int__", "__float__", "nonzero", "numpy"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=orig, _n=name, **kw: (reads.append(_n), _o(self, *a, **kw))[1])
    got = padded_on_device(q, k, v, cq, ck, mq, mk, 1.0 / 4.0, window)
    grads = torch.autograd.grad(got, (q, k, v), w)
    monkeypatch.undo()
    assert reads == []
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, v), w)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("window", [2, 6])
def test_device_path_windows_over_true_positions(window):
    """With `positions` (rows removed from the stream, as under late insertion) the device path
    applies the window over those positions, like the reference."""
    from masklab.kernels.attention import padded_on_device

    lens = [9, 1, 0, 14]
    q, k, v, cq, ck, mq, mk = pack(lens, lens, 2, 16, torch.float64)
    g = torch.Generator().manual_seed(5)
    pos = torch.cat([torch.cumsum(torch.randint(1, 4, (n,), generator=g), 0) for n in lens])  # gaps of 1-3
    ref = varlen_attention_torch(q, k, v, cq, ck, mq, mk, window=window, buckets=1, positions=pos)
    got = padded_on_device(q, k, v, cq, ck, mq, mk, 1.0 / 4.0, window, pos)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(got, padded_on_device(q, k, v, cq, ck, mq, mk, 1.0 / 4.0, window))  # rows differ
