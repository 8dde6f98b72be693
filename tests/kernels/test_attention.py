"""Triton varlen attention vs the PyTorch reference (interpreter on CPU), forward and gradients."""
import subprocess
import sys

import pytest
import torch

import kernels
from kernels.attention import varlen_attention_torch


def pack(lq, lk, H, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cq = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32)
    ck = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cq[-1]), H, D, generator=g).to(dtype).requires_grad_()
    k = torch.randn(int(ck[-1]), H, D, generator=g).to(dtype).requires_grad_()
    v = torch.randn(int(ck[-1]), H, D, generator=g).to(dtype).requires_grad_()
    return q, k, v, cq, ck, max(lq), max(lk)


def compare(lq, lk, H=2, D=32, window=None, dtype=torch.float32, atol=2e-5, seed=0):
    q, k, v, cq, ck, mq, mk = pack(lq, lk, H, D, dtype, seed)
    out = kernels.varlen_attention(q, k, v, cq, ck, mq, mk, window=window, backend="triton")
    gout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), gout)
    # reference in fp32 from the same (possibly rounded) inputs
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = varlen_attention_torch(q32, k32, v32, cq, ck, mq, mk, window=window)
    rgrads = torch.autograd.grad(ref, (q32, k32, v32), gout.float())
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=atol)
    for name, a, b in zip("qkv", grads, rgrads):
        torch.testing.assert_close(a.float(), b, atol=atol * 4, rtol=atol * 4, msg=f"d{name}")


# lengths 0/1, block-1 / block / block+1 (interpreter BLOCK 32), unequal q/k lengths, empty k
@pytest.mark.parametrize("lq,lk", [([1], [1]), ([31, 32, 33], [31, 32, 33]), ([5, 40, 1], [5, 40, 1]),
                                   ([7, 33], [20, 0]), ([3, 64], [50, 2]), ([0, 17], [0, 17])])
def test_fp32_matches_reference(lq, lk):
    compare(lq, lk)


@pytest.mark.parametrize("D", [32, 64, 128])
def test_head_dims(D):
    compare([9, 40], [40, 9], H=1, D=D)


@pytest.mark.parametrize("window", [2, 16, 33])
def test_sliding_window(window):
    compare([70, 3, 40], [70, 3, 40], window=window)


def test_bf16_within_stated_tolerance():
    # bf16 inputs, fp32 accumulation; the reference sees the same rounded inputs (tolerance 2e-2)
    compare([20, 45], [20, 45], dtype=torch.bfloat16, atol=2e-2)


def test_randomised_shapes():
    g = torch.Generator().manual_seed(123)
    for case in range(6):
        B = int(torch.randint(1, 9, (1,), generator=g))
        lq = torch.randint(1, 70, (B,), generator=g).tolist()
        lk = lq if case % 2 else torch.randint(1, 70, (B,), generator=g).tolist()
        window = [None, 24][case % 2]
        compare(lq, lk, H=1, D=[32, 64][case % 2], window=window, seed=case)


@pytest.mark.slow
def test_long_sequences():
    compare([300, 129, 1], [300, 129, 1], H=2, D=64)


def test_reference_gradcheck_float64():
    q, k, v, cq, ck, mq, mk = pack([3, 5], [4, 2], 1, 16, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: varlen_attention_torch(a, b, c, cq, ck, mq, mk), (q, k, v))
    q2, k2, v2, c2, _, m2, _ = pack([6, 2], [6, 2], 1, 16, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: varlen_attention_torch(a, b, c, c2, c2, m2, m2, window=2),
                                    (q2, k2, v2))


@pytest.mark.parametrize("mutate,err,needle", [
    (lambda a: {**a, "k": a["k"].double()}, TypeError, "dtypes differ"),
    (lambda a: {**a, "cq": a["cq"].long()}, TypeError, "int32"),
    (lambda a: {**a, "cq": torch.tensor([0, 9, 3], dtype=torch.int32)}, ValueError, "non-decreasing"),
    (lambda a: {**a, "cq": torch.tensor([0, 3, 8], dtype=torch.int32)}, ValueError, "total tokens"),
    (lambda a: {**a, "q": torch.randn(10, 2, 48), "k": torch.randn(10, 2, 48), "v": torch.randn(10, 2, 48)},
     ValueError, "head_dim 48"),
])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_input(mutate, err, needle, backend):
    q, k, v, cq, ck, mq, mk = pack([3, 7], [3, 7], 2, 32)
    a = mutate({"q": q, "k": k, "v": v, "cq": cq})
    with pytest.raises(err, match=needle):
        kernels.varlen_attention(a["q"], a["k"], a["v"], a["cq"], ck, mq, mk, backend=backend)


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    code = ("import os; os.environ.pop('TRITON_INTERPRET', None)\n"
            "import torch, kernels\n"
            "q = torch.randn(4, 1, 32); cu = torch.tensor([0, 4], dtype=torch.int32)\n"
            "try:\n    kernels.varlen_attention(q, q, q, cu, cu, 4, 4, backend='triton')\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"})
    assert "ERR" in r.stdout and "TRITON_INTERPRET=1" in r.stdout, r.stdout + r.stderr


def test_launch_checks():
    from kernels.triton_attention import check_launch

    with pytest.raises(ValueError, match="power of two >= 16"):
        check_launch(64, 8, 64, 1)
    with pytest.raises(ValueError, match="power of two"):
        check_launch(64, 48, 64, 1)
    with pytest.raises(ValueError, match="exceeds 65535"):
        check_launch(64, 64, 64, 70000)
    with pytest.raises(ValueError, match="BLOCK_D"):
        check_launch(512, 64, 64, 1)
