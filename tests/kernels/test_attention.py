"""Triton varlen attention (CPU interpreter, INTERPRET_CONFIG blocks 32x32) vs the references.

Oracles: `kernels.varlen_attention(..., backend="torch")` (the PyTorch reference, through the
dispatch) and `naive_attention` below (a per-sequence float64 loop, independent of both).
Tolerances: fp32 atol = rtol = 1e-4 on outputs, 4e-4 on gradients (fp32 accumulation in a
different order); bf16 inputs (upcast after loading in the interpreter) 2e-2 / 5e-2 against an
fp32 reference fed the same rounded inputs.
"""
import math
import os
import subprocess
import sys

import pytest
import torch

from masklab import kernels
from masklab.kernels.attention import varlen_attention_torch


def pack(lq, lk, H, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cq = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32)
    ck = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cq[-1]), H, D, generator=g).to(dtype).requires_grad_()
    k = torch.randn(int(ck[-1]), H, D, generator=g).to(dtype).requires_grad_()
    v = torch.randn(int(ck[-1]), H, D, generator=g).to(dtype).requires_grad_()
    return q, k, v, cq, ck, max(lq), max(lk)


def naive_attention(q, k, v, cq, ck, scale=None, window=None):
    """Per-sequence dense softmax; a query that sees no key outputs zeros. Differentiable."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for b in range(cq.numel() - 1):
        qs, ks, vs = q[cq[b]:cq[b + 1]], k[ck[b]:ck[b + 1]], v[ck[b]:ck[b + 1]]
        s = torch.einsum("ihd,jhd->hij", qs, ks) * scale
        i = torch.arange(qs.shape[0])[:, None]
        j = torch.arange(ks.shape[0])[None, :]
        vis = torch.ones(qs.shape[0], ks.shape[0], dtype=torch.bool)
        if window is not None:
            vis = (i - j).abs() <= window // 2
        p = torch.softmax(s.masked_fill(~vis, float("-inf")), -1).nan_to_num(0.0)
        outs.append(torch.einsum("hij,jhd->ihd", p, vs))
    return torch.cat(outs)


def window_has_blind_queries(lq, lk, window):
    """A query past its keys' window sees nothing (see test_reference_bug_blind_window_queries)."""
    return window is not None and any(a > b + window // 2 and b > 0 for a, b in zip(lq, lk))


def compare(lq, lk, H=2, D=32, window=None, dtype=torch.float32, atol=1e-4, gatol=4e-4, seed=0, scale=None):
    q, k, v, cq, ck, mq, mk = pack(lq, lk, H, D, dtype, seed)
    out = kernels.varlen_attention(q, k, v, cq, ck, mq, mk, scale, window, backend="triton")
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    grads = torch.autograd.grad(out, (q, k, v), gout)
    # reference in fp32 (fp64 for the naive loop) from the same, possibly rounded, inputs
    rdt = torch.float64 if window_has_blind_queries(lq, lk, window) else torch.float32
    q2, k2, v2 = (t.detach().to(rdt).requires_grad_() for t in (q, k, v))
    if rdt == torch.float64:
        ref = naive_attention(q2, k2, v2, cq, ck, scale, window)
    else:
        ref = kernels.varlen_attention(q2, k2, v2, cq, ck, mq, mk, scale, window, backend="torch")
    rgrads = torch.autograd.grad(ref, (q2, k2, v2), gout.to(rdt))
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.to(rdt), ref, atol=atol, rtol=atol)
    for name, a, b in zip("qkv", grads, rgrads):
        torch.testing.assert_close(a.to(rdt), b, atol=gatol, rtol=gatol, msg=lambda m, name=name: f"d{name}: {m}")


# lengths 0/1, block-1 / block / block+1 (BLOCK 32), unequal q/k lengths, sequences with no keys
@pytest.mark.parametrize("lq,lk", [([1], [1]), ([31, 32, 33], [31, 32, 33]), ([5, 40, 1], [5, 40, 1]),
                                   ([7, 33], [20, 0]), ([3, 64], [50, 2]), ([0, 17], [0, 17]), ([65], [1]),
                                   ([1, 2], [70, 0])])
def test_fp32_matches_reference(lq, lk):
    compare(lq, lk)


@pytest.mark.parametrize("D", [16, 32, 64, 128])
def test_head_dims(D):
    compare([9, 40], [40, 9], H=1, D=D)


@pytest.mark.parametrize("window,lq,lk", [(1, [70, 3], [70, 3]), (2, [70, 3, 40], [70, 3, 40]),
                                          (16, [70, 3, 40], [70, 3, 40]), (33, [40, 5], [12, 50]),
                                          (200, [45], [45])])
def test_sliding_window(window, lq, lk):
    compare(lq, lk, window=window)


def test_softmax_scale_is_used():
    compare([20, 33], [33, 20], scale=0.5)


@pytest.mark.parametrize("D,window", [(64, None), (32, 16)])
def test_bf16_within_stated_tolerance(D, window):
    compare([20, 45], [45, 20], D=D, window=window, dtype=torch.bfloat16, atol=2e-2, gatol=5e-2)


def test_randomised_shapes():
    """Seeded: batch 1..8, lengths 1..100, some k lengths 0, q != k lengths, windows on/off."""
    g = torch.Generator().manual_seed(123)
    for case in range(8):
        B = int(torch.randint(1, 9, (1,), generator=g))
        lq = torch.randint(1, 101, (B,), generator=g).tolist()
        lk = lq if case % 3 == 0 else torch.randint(0, 101, (B,), generator=g).tolist()
        window = [None, 24, 7, None][case % 4]
        compare(lq, lk, H=1 + case % 2, D=[32, 64, 128][case % 3], window=window, seed=case)


@pytest.mark.slow
def test_randomised_long_sweep():
    """Lengths up to 300 (10 blocks of 32), batch up to 8, all head dims; under a minute on one core."""
    g = torch.Generator().manual_seed(7)
    compare([300, 129, 1], [300, 129, 1], H=2, D=64)
    for case in range(11):
        B = int(torch.randint(1, 9, (1,), generator=g))
        lq = torch.randint(1, 301, (B,), generator=g).tolist()
        lk = lq if case % 2 else [x if x % 5 else 0 for x in torch.randint(1, 301, (B,), generator=g).tolist()]
        compare(lq, lk, H=1 + case % 2, D=[32, 64, 128][case % 3], window=[None, 128, 31][case % 3], seed=100 + case)


def test_strided_views_and_no_out_of_bounds_reads():
    """q/k/v are views into a packed qkv buffer whose spare rows are NaN: a read past a sequence's
    rows, or of the wrong column, would put NaN into the output or a gradient."""
    T, H, D = 45, 2, 32
    buf = torch.full((T + 40, 3, H, D + 16), float("nan"))
    buf[:T, :, :, :D] = torch.randn(T, 3, H, D)
    leaf = buf.requires_grad_()
    q, k, v = (leaf[:T, i, :, :D] for i in range(3))
    cu = torch.tensor([0, 13, 13, 45], dtype=torch.int32)
    out = kernels.varlen_attention(q, k, v, cu, cu, 32, 32, backend="triton")
    ref = kernels.varlen_attention(*(t.detach().clone() for t in (q, k, v)), cu, cu, 32, 32, backend="torch")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    assert torch.isfinite(grad[:T, :, :, :D]).all() and grad[T:].abs().sum() == 0


def test_empty_inputs():
    q, k, v, cq, ck, _, _ = pack([0, 0], [3, 4], 2, 32)
    out = kernels.varlen_attention(q, k, v, cq, ck, 0, 4, backend="triton")
    assert out.shape == (0, 2, 32)
    q, k, v, cq, ck, _, _ = pack([3, 4], [0, 0], 2, 32)  # no keys at all: zeros, zero gradients
    out = kernels.varlen_attention(q, k, v, cq, ck, 4, 0, backend="triton")
    assert torch.equal(out, torch.zeros_like(out))
    (dq,) = torch.autograd.grad(out.sum(), q)
    assert torch.equal(dq, torch.zeros_like(dq))


def test_backward_is_deterministic():
    q, k, v, cq, ck, mq, mk = pack([40, 7], [33, 70], 2, 32)
    runs = []
    for _ in range(2):
        out = kernels.varlen_attention(q, k, v, cq, ck, mq, mk, window=20, backend="triton")
        runs.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_blind_window_queries_output_zeros():
    """Query i >= k_len + window // 2 sees no key: zeros (like a sequence with no keys)."""
    q, k, v, cq, ck, mq, mk = pack([10], [2], 1, 32)
    out = kernels.varlen_attention(q, k, v, cq, ck, mq, mk, window=2, backend="triton")
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))
    torch.testing.assert_close(out.double(), naive_attention(q.double(), k.double(), v.double(), cq, ck, window=2),
                               atol=1e-5, rtol=1e-5)


def test_reference_gives_zeros_to_queries_that_see_no_key():
    # query i >= 2 of a 10-row sequence has keys [0, 2), none inside |i - j| <= 1
    q, k, v, cq, ck, mq, mk = pack([10], [2], 1, 32)
    out = kernels.varlen_attention(q, k, v, cq, ck, mq, mk, window=2, backend="torch")
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))


@pytest.mark.parametrize("window", [None, 6])
def test_length_buckets_equal_one_padded_batch(window):
    """The CPU path groups sequences by length (each group padded to its own max): forward and
    gradients equal the single padded batch, for unequal q / k lengths and empty sequences."""
    lq, lk = [5, 40, 1, 0, 17, 33, 2, 9, 12], [5, 40, 3, 0, 17, 30, 2, 1, 12]
    q, k, v, cq, ck, mq, mk = pack(lq, lk, 2, 16, torch.float64)
    outs = []
    for buckets in (1, 3, 4, 100):
        out = varlen_attention_torch(q, k, v, cq, ck, mq, mk, window=window, buckets=buckets)
        outs.append((out, *torch.autograd.grad(out, (q, k, v), torch.ones_like(out))))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_reference_gradcheck_float64():
    q, k, v, cq, ck, mq, mk = pack([2, 3], [3, 1], 1, 16, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: varlen_attention_torch(a, b, c, cq, ck, mq, mk), (q, k, v),
                                    fast_mode=True)
    q2, k2, v2, c2, _, m2, _ = pack([4, 2], [4, 2], 1, 16, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: varlen_attention_torch(a, b, c, c2, c2, m2, m2, window=2),
                                    (q2, k2, v2), fast_mode=True)


def _bad(a):
    return {"q": a[0], "k": a[1], "v": a[2], "cq": a[3], "ck": a[4]}


@pytest.mark.parametrize("mutate,err,needle", [
    (lambda a: {**a, "k": a["k"].double()}, TypeError, "dtypes differ"),
    (lambda a: {**a, "k": a["k"].to("meta"), "v": a["v"].to("meta")}, ValueError, "same device"),
    (lambda a: {**a, "cq": a["cq"].long()}, TypeError, "int32"),
    (lambda a: {**a, "cq": torch.tensor([0, 9, 3], dtype=torch.int32)}, ValueError, "non-decreasing"),
    (lambda a: {**a, "cq": torch.tensor([1, 3, 10], dtype=torch.int32)}, ValueError, "start at 0"),
    (lambda a: {**a, "cq": torch.tensor([0, 3, 8], dtype=torch.int32)}, ValueError, "total tokens"),
    (lambda a: {**a, "ck": torch.tensor([0, 10], dtype=torch.int32)}, ValueError, "same batch size"),
    (lambda a: {**a, "q": a["q"][None]}, ValueError, "total_tokens, heads, head_dim"),
    (lambda a: {k: torch.randn(10, 2, 48) if k in "qkv" else t for k, t in a.items()}, ValueError, "head_dim 48"),
])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_input(mutate, err, needle, backend):
    a = mutate(_bad(pack([3, 7], [3, 7], 2, 32)))
    with pytest.raises(err, match=needle):
        kernels.varlen_attention(a["q"], a["k"], a["v"], a["cq"], a["ck"], 7, 7, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_window(backend):
    q, k, v, cq, ck, mq, mk = pack([3], [3], 1, 32)
    with pytest.raises(ValueError, match="window must be >= 1"):
        kernels.varlen_attention(q, k, v, cq, ck, mq, mk, window=0, backend=backend)


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    # TRITON_INTERPRET is read at import, so this needs a fresh interpreter
    code = ("import torch\nfrom masklab import kernels\n"
            "q = torch.randn(4, 1, 32); cu = torch.tensor([0, 4], dtype=torch.int32)\n"
            "try:\n    kernels.varlen_attention(q, q, q, cu, cu, 4, 4, backend='triton')\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in r.stdout and "TRITON_INTERPRET=1" in r.stdout, r.stdout + r.stderr


def test_launch_checks():
    from masklab.kernels.triton_attention_tiles import check_launch, seq_bucket

    with pytest.raises(ValueError, match="power of two >= 16"):
        check_launch(64, 8, 64, 1)
    with pytest.raises(ValueError, match="power of two"):
        check_launch(64, 48, 64, 1)
    check_launch(64, 64, 64, 70000)  # batch x heads is on axis 0 (test_attention_grid.py)
    with pytest.raises(ValueError, match="axis 1 .* exceeds 65535"):
        check_launch(64, 64, 64, 1, max_len=65536 * 64)
    with pytest.raises(ValueError, match="BLOCK_D"):
        check_launch(512, 64, 64, 1)
    assert [seq_bucket(n) for n in (0, 1, 100, 128, 129, 10**6)] == [64, 64, 128, 128, 256, 8192]


def test_every_shipped_config_passes_launch_checks():
    from masklab.kernels import triton_attention_tiles as T

    for table in T.TABLES.values():
        for hc, cfgs in table.items():
            for m, n, _, _ in cfgs:
                T.check_launch(hc, m, n, 1)


@pytest.mark.parametrize("row", [0, 1])
@pytest.mark.parametrize("D", [64, 128])
def test_every_production_tile_shape_in_the_interpreter(D, row):
    """Each shipped (BLOCK_M, BLOCK_N) of the forward, dk/dv and dq kernels runs once (CI otherwise runs
    INTERPRET_CONFIG only); lengths straddle the tiles: 1, a block and a bit, unequal q/k, no keys."""
    from masklab.kernels import triton_attention_tiles as T

    hc = T.head_class(D)
    with T.pin_configs(**{name: table[hc][row] for name, table in T.TABLES.items()}):
        compare([1, 130, 20], [1, 70, 0], H=1, D=D, window=None if row == 0 else 48)