"""Kernel benchmarks.

CPU: peak memory and time of the gather + MLM loss, fwd + bwd, at M=16384, V=32768, D=768 fp32:
materialised logits (the reference) vs the vocabulary-chunked loss (the Triton kernel's algorithm
with torch ops: Triton cannot run on a CPU outside its interpreter). Each variant runs in its own
subprocess; memory is peak RSS (ru_maxrss) above the RSS once the inputs exist; time is wall.
Goal: <= 0.15x memory, <= 1.3x time.
CUDA (when present): fwd + bwd TFLOP/s of varlen attention, Triton vs flash_attn (if installed)
vs SDPA on padded input, BERT-base heads (12 x 64), lengths up to 128 and 512 with a realistic
mix; and the fused loss (Triton) vs materialised: time and peak CUDA memory, bf16.
`--dry-run` runs the CUDA path's code on CPU at tiny shapes (torch backends): not a measurement.

    python -m benchmarks.kernels [--dry-run] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.results_table import machine_line, write_table

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from masklab.kernels.mlm_loss import masked_token_loss_torch
from masklab.kernels.triton_mlm_loss import masked_token_loss_chunked_torch
M, V, D = {M}, {V}, {D}
g = torch.Generator().manual_seed(0)
T = M * 2  # the masked rows are gathered from a larger packed batch
h = torch.randn(T, D, generator=g, requires_grad=True)
pos = torch.randperm(T, generator=g)[:M].sort().values
lab = torch.randint(0, V, (M,), generator=g)
dw = (torch.randn(D, D, generator=g) * 0.02).requires_grad_(); db = torch.zeros(D, requires_grad=True)
lw = torch.ones(D, requires_grad=True); lb = torch.zeros(D, requires_grad=True)
W = (torch.randn(V, D, generator=g) * 0.02).requires_grad_(); b = torch.zeros(V, requires_grad=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn = masked_token_loss_torch if {variant!r} == "materialised" else masked_token_loss_chunked_torch
t = time.perf_counter()
loss, _ = fn(h, pos, lab, dw, db, lw, lb, W, b)
loss.backward()
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({{"peak_mib": (peak - base) / 1024, "seconds": dt, "loss": float(loss)}}))
"""


def cpu_memory(M: int, V: int, D: int, threads: int) -> list[list]:
    res = {}
    for variant in ("materialised", "chunked"):
        code = CHILD.format(threads=threads, M=M, V=V, D=D, variant=variant)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{variant} run failed: {r.stderr[-2000:]}")
        res[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    base = res["materialised"]
    return [[f"M={M}, V={V}, D={D}", k, f"{v['peak_mib']:,.0f}", f"{v['peak_mib'] / base['peak_mib']:.2f}x",
             f"{v['seconds']:.1f}", f"{v['seconds'] / base['seconds']:.2f}x", f"{v['loss']:.4f}"]
            for k, v in res.items()]


def _time(fn, device: torch.device, reps: int) -> float:
    """Mean seconds per call after one warm-up (which also runs Triton's autotuning)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def _peak_mib(fn, device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return f"{(torch.cuda.max_memory_allocated() - base) / 2**20:,.0f}"


def attention_rows(device: torch.device, dry: bool) -> list[list]:
    """fwd+bwd TFLOP/s (useful FLOPs: padding excluded) on lengths ~ U[L/8, L]."""
    from masklab import kernels
    from masklab.kernels.dispatch import flash_attn_available

    rows = []
    H, d = (2, 32) if dry else (12, 64)
    dtype = torch.float32 if dry else torch.bfloat16
    reps = 1 if dry else 20
    for L in (128, 512):
        B = 2 if dry else (256 if L == 128 else 64)
        g = torch.Generator().manual_seed(0)
        lens = torch.randint(max(1, L // 8), L + 1, (B,), generator=g)
        cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(torch.int32).to(device)
        T = int(lens.sum())
        q, k, v = (torch.randn(T, H, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        flops = 4 * d * H * float((lens.double() ** 2).sum()) * 3.5  # fwd: 2 GEMMs; bwd: 5 GEMMs
        backends = ["torch"] if dry else ["triton"] + (["flash_attn"] if flash_attn_available() else [])
        results = {}
        for be in backends:
            def step(be=be, q=q, k=k, v=v, cu=cu, L=L):
                o = kernels.varlen_attention(q, k, v, cu, cu, L, L, backend=be)
                o.backward(torch.ones_like(o))
            results[be] = _time(step, device, reps)
        # SDPA on the padded batch [B, H, L, d], no mask (its fastest kernel; padding is wasted work)
        qp, kp, vp = (torch.randn(B, H, L, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        def sdpa(qp=qp, kp=kp, vp=vp):
            torch.nn.functional.scaled_dot_product_attention(qp, kp, vp).sum().backward()
        results["sdpa (padded, no mask)"] = _time(sdpa, device, reps)
        base = next(iter(results.values()))
        for be, dt in results.items():
            rows.append([f"L<={L}, B={B}, {H}x{d}, {T} tokens", be, f"{flops / dt / 1e12:.2f}", f"{dt * 1e3:.2f}",
                         f"{base / dt:.2f}x"])
    return rows


def loss_rows(device: torch.device, dry: bool) -> list[list]:
    """Gather + head + decoder + CE, fwd + bwd: materialised logits vs the vocabulary-chunked kernel."""
    from masklab import kernels
    from masklab.kernels.triton_mlm_loss import masked_token_loss_chunked_torch

    M, V, D = (64, 1000, 32) if dry else (16384, 32768, 768)
    dtype = torch.float32 if dry else torch.bfloat16
    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=0.02):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype).requires_grad_()

    T = M * 6  # ~15% of a packed batch is predicted
    h = t(T, D, scale=1.0)
    pos = torch.randperm(T, generator=g)[:M].sort().values.to(device)
    lab = torch.randint(0, V, (M,), generator=g).to(device)
    params = [t(D, D), t(D), (torch.ones(D, device=device, dtype=dtype)).requires_grad_(), t(D), t(V, D), t(V)]
    impls = {"materialised (torch)": lambda: kernels.masked_token_loss(h, pos, lab, *params, backend="torch")}
    if dry:
        impls["chunked (torch twin)"] = lambda: masked_token_loss_chunked_torch(h, pos, lab, *params, vocab_chunk=256)
    else:
        impls["fused (triton)"] = lambda: kernels.masked_token_loss(h, pos, lab, *params, backend="triton")
    rows, base = [], None
    for name, fn in impls.items():
        def step(fn=fn):
            fn()[0].backward()
        dt = _time(step, device, 1 if dry else 10)
        mem = _peak_mib(step, device)
        base = base or dt
        rows.append([f"M={M}, V={V}, D={D}, {str(dtype).split('.')[-1]}", name, f"{dt * 1e3:.1f}", f"{dt / base:.2f}x",
                     mem])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="exercise the CUDA path on CPU at tiny shapes")
    ap.add_argument("--M", type=int, default=16384)
    ap.add_argument("--V", type=int, default=32768)
    ap.add_argument("--D", type=int, default=768)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results_kernels.md")
    args = ap.parse_args(argv)
    text = ""
    if not args.dry_run:
        rows = cpu_memory(args.M, args.V, args.D, args.threads)
        text += write_table("", "Fused gather + MLM loss, fwd + bwd, CPU fp32",
                            ["shape", "loss", "peak MiB above inputs", "vs materialised", "seconds (wall)",
                             "vs materialised", "loss value"], rows,
                            "Peak RSS per subprocess (ru_maxrss). `chunked` is the Triton kernel's algorithm in torch "
                            "ops (vocab chunks of 4096, logits recomputed in backward).")
    if torch.cuda.is_available() or args.dry_run:
        dev = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
        tag = " (DRY RUN on CPU, tiny shapes: not a measurement)" if args.dry_run else " (CUDA, bf16)"
        text += "\n" + write_table("", "Varlen attention fwd + bwd" + tag,
                                   ["shape", "backend", "TFLOP/s", "ms", "speed vs first"],
                                   attention_rows(dev, args.dry_run))
        text += "\n" + write_table("", "Gather + MLM loss fwd + bwd" + tag,
                                   ["shape", "loss", "ms", "time vs materialised", "peak MiB above inputs"],
                                   loss_rows(dev, args.dry_run))
    text += "\n" + machine_line(args.threads) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
