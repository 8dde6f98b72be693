"""Fused masked-token loss: Triton (interpreter) and its chunked-torch twin vs the materialised reference.

Tolerances: fp32 loss atol 1e-4 / rtol 1e-5 (a sum over M rows), gradients 1e-5 / 1e-4;
bf16 inputs: loss rtol 2e-2, gradients 5e-2 against an fp32 reference on the same rounded inputs.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from masklab import kernels
from masklab.kernels.mlm_loss import head_transform, masked_token_loss_torch
from masklab.kernels.triton_mlm_loss import (
    masked_token_loss_chunked_torch,
    masked_token_loss_triton,
)


def setup(T=50, D=32, V=300, M=14, dtype=torch.float32, bias=True, dec_bias=True, seed=0, positions=None):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, D, generator=g).to(dtype).requires_grad_()
    pos = torch.randperm(T, generator=g)[:M].sort().values if positions is None else positions
    M = pos.shape[0]
    lab = torch.randint(0, V, (M,), generator=g)
    if M:
        lab[min(3, M - 1)] = -100  # bucket padding is ignored
    dense = (torch.randn(D, D, generator=g) * 0.2).to(dtype).requires_grad_()
    dense_b = (torch.randn(D, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    ln_w = (1 + 0.1 * torch.randn(D, generator=g)).to(dtype).requires_grad_()
    ln_b = (0.1 * torch.randn(D, generator=g)).to(dtype).requires_grad_() if bias else None
    W = (torch.randn(V, D, generator=g) * 0.3).to(dtype).requires_grad_()
    b = (torch.randn(V, generator=g) * 0.1).to(dtype).requires_grad_() if dec_bias else None
    return [h, pos, lab, dense, dense_b, ln_w, ln_b, W, b]


def run(fn, args, **kw):
    loss, nc = fn(*args, **kw)
    params = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return loss, nc, torch.autograd.grad(loss, params, allow_unused=True)


def triton_loss(*a, **kw):
    """Through the dispatch (default vocab_chunk) unless a vocab_chunk is asked for."""
    return masked_token_loss_triton(*a, **kw) if kw else kernels.masked_token_loss(*a, backend="triton")


def assert_matches(out, ref, loss_tol=(1e-4, 1e-5), grad_tol=(1e-5, 1e-4)):
    assert out[0].dtype == torch.float32 and out[0].dim() == 0
    assert out[1].dtype == torch.int64 and out[1].dim() == 0
    torch.testing.assert_close(out[0].float(), ref[0].float(), atol=loss_tol[0], rtol=loss_tol[1])
    assert int(out[1]) == int(ref[1])
    for a, b in zip(out[2], ref[2]):
        torch.testing.assert_close(a.float(), b.float(), atol=grad_tol[0], rtol=grad_tol[1])


@pytest.mark.parametrize("bias,dec_bias", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("chunk", [64, 4096])  # 64: 300 = 4 x 64 + 44, a ragged last chunk
def test_fused_loss_fp32(bias, dec_bias, chunk):
    args = setup(bias=bias, dec_bias=dec_bias)
    ref = run(masked_token_loss_torch, args)
    assert_matches(run(triton_loss, args, vocab_chunk=chunk), ref)
    assert_matches(run(masked_token_loss_chunked_torch, args, vocab_chunk=chunk), ref)


def test_dispatch_default_chunk_and_randomised_shapes():
    g = torch.Generator().manual_seed(3)
    for case in range(4):
        T, D, V = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((5, 80), (8, 65), (10, 700)))
        args = setup(T=T, D=D, V=V, M=int(torch.randint(1, T + 1, (1,), generator=g)), seed=case)
        assert_matches(run(triton_loss, args), run(masked_token_loss_torch, args))


def test_fused_loss_bf16_tolerance():
    args = setup(dtype=torch.bfloat16)
    ref = run(masked_token_loss_torch, [a.detach().float().requires_grad_() if isinstance(a, torch.Tensor) and
                                        a.is_floating_point() else a for a in args])
    out = run(triton_loss, args, vocab_chunk=128)
    assert_matches(out, ref, loss_tol=(0.5, 2e-2), grad_tol=(5e-2, 5e-2))


def test_duplicate_positions_add_their_gradients():
    args = setup(positions=torch.tensor([4, 4, 9, 0, 4]))
    assert_matches(run(triton_loss, args, vocab_chunk=100), run(masked_token_loss_torch, args))


def test_no_positions_and_all_ignored():
    for args in (setup(positions=torch.zeros(0, dtype=torch.int64)), setup(M=5)):
        args[2] = torch.full_like(args[2], -100)
        loss, nc, grads = run(triton_loss, args, vocab_chunk=64)
        assert float(loss.detach()) == 0.0 and int(nc) == 0
        assert all(g is None or not g.any() for g in grads)
        assert_matches((loss, nc, grads), run(masked_token_loss_torch, args))


def test_accuracy_counts_argmax_hits():
    h, pos, lab, *rest = setup(V=64)
    W = rest[-2].detach().clone()
    x = head_transform(h[pos], *rest[:4], 1e-12)
    lab = (x @ W.t() + rest[-1]).argmax(-1).detach()
    lab[0] = (lab[0] + 1) % 64
    lab[1] = -100  # an ignored row never counts
    for chunk in (16, 4096):
        _, nc = triton_loss(h, pos, lab, *rest[:4], W, rest[-1], vocab_chunk=chunk)
        assert int(nc) == len(lab) - 2


class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("fn", [triton_loss, masked_token_loss_chunked_torch])
def test_never_materialises_the_full_logits(fn):
    args = setup(M=20, V=300)
    with _Shapes() as mode:
        loss, _ = fn(*args, vocab_chunk=64)
        loss.backward()
    assert mode.shapes and (20, 64) in mode.shapes  # it did run chunk by chunk
    assert not any(len(s) == 2 and s[0] == 20 and s[1] > 64 for s in mode.shapes), sorted(set(mode.shapes))


def test_gradcheck_float64():
    args = [a.double().detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in setup(T=6, D=4, V=7, M=3)]
    h, pos, lab, *rest = args
    for fn, kw in ((masked_token_loss_torch, {}), (masked_token_loss_chunked_torch, {"vocab_chunk": 3})):
        # (the Triton CE kernels compute in fp32 whatever the input: no fp64 gradcheck for them)
        assert torch.autograd.gradcheck(lambda h_, w_, b_, fn=fn, kw=kw: fn(h_, pos, lab, *rest[:4], w_, b_, **kw)[0],
                                        (h, rest[-2], rest[-1]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_loss_bad_input(backend):
    h, pos, lab, *rest = setup()
    with pytest.raises(IndexError, match="out of range"):
        kernels.masked_token_loss(h, pos + 1000, lab, *rest, backend=backend)
    with pytest.raises(IndexError, match="mlm_labels out of range"):
        kernels.masked_token_loss(h, pos, lab + 10_000, *rest, backend=backend)
    with pytest.raises(TypeError, match="int64"):
        kernels.masked_token_loss(h, pos.int(), lab, *rest, backend=backend)
    with pytest.raises(ValueError, match="must be equal 1-D"):
        kernels.masked_token_loss(h, pos, lab[:-1], *rest, backend=backend)
    with pytest.raises(ValueError, match="does not match hidden dim"):
        kernels.masked_token_loss(h, pos, lab, *rest[:4], rest[4][:, :-1], rest[5], backend=backend)
    with pytest.raises(ValueError, match="same device"):
        kernels.masked_token_loss(h, pos.to("meta"), lab, *rest, backend=backend)


def test_bad_vocab_chunk():
    with pytest.raises(ValueError, match="vocab_chunk must be >= 1"):
        triton_loss(*setup(), vocab_chunk=0)


def _bf16_rounded(args):
    """fp32 leaves holding bf16-representable values (what autocast casts losslessly)."""
    return [a.detach().bfloat16().float().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a for a in args]


def _head_fp32_layer_norm(x, dense_weight, dense_bias, ln_weight, ln_bias, ln_eps):
    """The head transform as CUDA autocast runs it: layer_norm in fp32 (CPU autocast keeps it bf16)."""
    y = torch.nn.functional.gelu(torch.nn.functional.linear(x, dense_weight, dense_bias))
    with torch.autocast("cpu", enabled=False):
        return torch.nn.functional.layer_norm(y.float(), (y.shape[-1],), ln_weight, ln_bias, ln_eps)


@pytest.mark.parametrize("cuda_like_ln", [False, True])
@pytest.mark.parametrize("fn", [masked_token_loss_triton, masked_token_loss_chunked_torch])
def test_fused_loss_under_cpu_autocast_bf16(fn, cuda_like_ln, monkeypatch):
    """Forward and backward build the same bf16 logits: the backward softmax rows sum to 1, and loss and
    grads (hidden, decoder W/b, head dense/LN) match an fp32 reference on the same rounded inputs.
    cuda_like_ln: the head's LayerNorm hands fp32 to the decoder, as under CUDA autocast."""
    from masklab.kernels import triton_mlm_loss as L

    if cuda_like_ln:
        monkeypatch.setattr(L, "head_transform", _head_fp32_layer_norm)
    args = _bf16_rounded(setup(T=40, D=32, V=300, M=16))
    ref = run(masked_token_loss_torch, args)
    row_sums = []
    for name in ("_grad_triton", "_grad_torch"):
        real = getattr(L, name)

        def spy(logits, labels, lse, v0, scale, real=real):
            row_sums.append(torch.exp(logits.float() - lse[:, None]).sum(1))
            return real(logits, labels, lse, v0, scale)
        monkeypatch.setattr(L, name, spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # forward only: backward runs outside, as in training
        loss, nc = fn(*args, vocab_chunk=128)
    out = (loss, nc, torch.autograd.grad(loss, [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]))
    assert len(row_sums) == 3  # 300 columns = 128 + 128 + 44
    torch.testing.assert_close(torch.stack(row_sums).sum(0), torch.ones(16), atol=1e-3, rtol=0)
    assert_matches(out, ref, loss_tol=(0.2, 1e-2), grad_tol=(3e-2, 3e-2))
    assert all(g.dtype == torch.float32 for g in out[2])  # master-weight grads stay fp32


def test_fold_target_ignores_masked_tail_columns():
    """vocab_chunk=100 runs 128-wide tiles: labels in [100, 128) belong to the next chunk and must not
    match the masked tail columns of the first one."""
    args = setup(T=40, V=300, M=28)
    args[2] = torch.arange(100, 128)
    args[2][5] = -100
    ref = run(masked_token_loss_torch, args)
    assert_matches(run(masked_token_loss_triton, args, vocab_chunk=100), ref)
