"""Attention with the window over true positions (`varlen_attention(positions=)`): late-mask
insertion's visible stream and Token Dropping's kept rows have gaps in their positions, and a local
window must span window // 2 real positions, not stream rows. Oracle: `positional_reference`, a
per-sequence dense softmax with the mask written from the definition |p_i - p_j| <= window // 2
(float64). Triton runs in the interpreter (INTERPRET_CONFIG 32x32 unless a production tile is pinned).
"""
import math

import pytest
import torch

from masklab import kernels
from masklab.kernels.attention import varlen_attention_torch
from tests.kernels.test_attention import pack

def positional_reference(q, k, v, cu, positions, window, scale=None):
    """From the definition: per sequence, dense softmax over keys j with |p_i - p_j| <= window // 2
    (p: the rows' true positions, gaps where rows were removed). Differentiable; no kernel code."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for b in range(cu.numel() - 1):
        a, e = int(cu[b]), int(cu[b + 1])
        p = positions[a:e]
        vis = (p[:, None] - p[None, :]).abs() <= window // 2
        s = torch.einsum("ihd,jhd->hij", q[a:e], k[a:e]) * scale
        outs.append(torch.einsum("hij,jhd->ihd", torch.softmax(s.masked_fill(~vis, float("-inf")), -1), v[a:e]))
    return torch.cat(outs)


def gapped_positions(lens, seed=0, drop=0.4):
    """Positions of `lens` visible rows per sequence: a sorted random subset of 0..~len/(1-drop), so
    consecutive rows sit 1, 2, 3... positions apart (as after removing [MASK] rows)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lens:
        full = int(n / (1 - drop)) + 2
        out.append(torch.randperm(full, generator=g)[:n].sort().values)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("lens,window", [([1, 40, 7], 8), ([33, 0, 20], 5), ([64], 16), ([50, 3], 1)])
def test_window_over_positions_matches_the_definition(backend, lens, window):
    q, k, v, cu, _, mx, _ = pack(lens, lens, 2, 32, seed=len(lens) + window)
    pos = gapped_positions(lens, seed=window)
    out = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=window, positions=pos, backend=backend)
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, (q, k, v), gout)
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = positional_reference(q2, k2, v2, cu, pos, window)
    rgrads = torch.autograd.grad(ref, (q2, k2, v2), gout.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)
    for name, a, b in zip("qkv", grads, rgrads):
        torch.testing.assert_close(a.double(), b, atol=4e-4, rtol=4e-4, msg=lambda m, name=name: f"d{name}: {m}")


def test_window_over_positions_is_not_the_row_window():
    """With gaps the two windows differ (the test above could not pass on a row-offset window);
    with consecutive positions they are the same computation, bit for bit."""
    lens, window = [40, 7], 8
    q, k, v, cu, _, mx, _ = pack(lens, lens, 2, 32, seed=5)
    pos = gapped_positions(lens, seed=1)
    rows = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=window, backend="torch")
    real = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=window, positions=pos, backend="torch")
    assert (rows - real).abs().max() > 1e-2
    consecutive = torch.cat([torch.arange(n) for n in lens])
    for backend in ("torch", "triton"):
        a = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=window, backend=backend)
        b = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=window, positions=consecutive, backend=backend)
        assert torch.equal(a, b), backend


def test_window_over_positions_padded_groups_match_the_definition():
    """The non-CPU torch path (sequences padded per length group) takes the same positional mask."""
    lens = [5, 40, 1, 17, 33, 9]
    q, k, v, cu, _, mx, _ = pack(lens, lens, 2, 16, torch.float64)
    pos = gapped_positions(lens, seed=4)
    ref = positional_reference(q, k, v, cu, pos, 6)
    for buckets in (1, 3):
        out = varlen_attention_torch(q, k, v, cu, cu, mx, mx, window=6, buckets=buckets, positions=pos)
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)


def test_positions_with_a_production_tile():
    """A shipped 128 x 64 forward tile: the row band bounds the tiles, the positions mask within them."""
    from masklab.kernels import triton_attention_tiles as T

    lens = [130, 20]
    q, k, v, cu, _, mx, _ = pack(lens, lens, 1, 64, seed=9)
    pos = gapped_positions(lens, seed=9, drop=0.6)
    with T.pin_configs(**{name: table[64][0] for name, table in T.TABLES.items()}):
        out = kernels.varlen_attention(q, k, v, cu, cu, mx, mx, window=48, positions=pos, backend="triton")
        (dq,) = torch.autograd.grad(out.square().sum(), q)
    q2 = q.detach().double().requires_grad_()
    ref = positional_reference(q2, k.double(), v.double(), cu, pos, 48)
    (rdq,) = torch.autograd.grad(ref.square().sum(), q2)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dq.double(), rdq, atol=4e-4, rtol=4e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_positions(backend):
    q, k, v, cq, ck, mq, mk = pack([3, 4], [3, 4], 1, 32)
    call = lambda pos, kk=k, vv=v, c2=ck: kernels.varlen_attention(q, kk, vv, cq, c2, mq, mk, window=4, positions=pos,
                                                                 backend=backend)
    with pytest.raises(ValueError, match="increase strictly"):
        call(torch.tensor([0, 2, 2, 0, 1, 2, 3]))
    call(torch.tensor([0, 2, 5, 0, 1, 2, 3]))  # a new sequence may start lower
    with pytest.raises(TypeError, match="int32/int64"):
        call(torch.arange(7.0))
    with pytest.raises(ValueError, match="same stream"):
        k2, v2, c2 = k[:5], v[:5], torch.tensor([0, 3, 5], dtype=torch.int32)
        call(torch.arange(7), k2, v2, c2)
