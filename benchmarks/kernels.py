"""Kernel benchmarks.

CPU: peak memory and time of the MLM loss fwd + bwd at M=16384, V=32768, D=768 fp32:
materialised logits (the reference) vs the vocabulary-chunked loss (same algorithm as the
Triton kernel, torch ops). Each variant runs in its own subprocess; memory is peak RSS
(ru_maxrss) above the RSS after the inputs exist. Goal: <= 0.15x memory, <= 1.3x time.
CUDA (when present): fwd + bwd TFLOP/s of varlen attention, Triton vs flash_attn (if
installed) vs SDPA on padded input, BERT-base heads (12 x 64), lengths up to 128 and 512
with a realistic mix; and the fused loss vs materialised, peak CUDA memory.
`--dry-run` runs the CUDA path's code on CPU at tiny shapes (torch backend).

    python benchmarks/kernels.py [--dry-run] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import machine_line, write_table  # noqa: E402

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from kernels.mlm_loss import masked_token_loss_torch
from kernels.triton_mlm_loss import masked_token_loss_chunked_torch
M, V, D = {M}, {V}, {D}
g = torch.Generator().manual_seed(0)
h = torch.randn(M, D, generator=g, requires_grad=True)
pos = torch.arange(M)
lab = torch.randint(0, V, (M,), generator=g)
dw = torch.randn(D, D, generator=g) * 0.02; db = torch.zeros(D); lw = torch.ones(D); lb = torch.zeros(D)
W = (torch.randn(V, D, generator=g) * 0.02).requires_grad_(); b = torch.zeros(V, requires_grad=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn = masked_token_loss_torch if {variant!r} == "materialised" else masked_token_loss_chunked_torch
t = time.process_time()
loss, _ = fn(h, pos, lab, dw, db, lw, lb, W, b)
loss.backward()
dt = time.process_time() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_mib": (peak - base) / 1024, "seconds": dt, "loss": float(loss)}}))
"""


def cpu_memory(M: int, V: int, D: int, threads: int) -> list[list]:
    root = str(Path(__file__).resolve().parents[1])
    res = {}
    for variant in ("materialised", "chunked"):
        code = CHILD.format(root=root, threads=threads, M=M, V=V, D=D, variant=variant)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{variant} run failed: {r.stderr[-2000:]}")
        res[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    base = res["materialised"]
    rows = []
    for k, v in res.items():
        rows.append([f"M={M}, V={V}, D={D}", k, f"{v['peak_mib']:,.0f}", f"{v['peak_mib'] / base['peak_mib']:.2f}x",
                     f"{v['seconds']:.1f}", f"{v['seconds'] / base['seconds']:.2f}x", f"{v['loss']:.4f}"])
    return rows


def _time_cuda(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def attention_rows(device: torch.device, dry: bool) -> list[list]:
    """fwd+bwd TFLOP/s on a realistic length mix (lengths ~ U[L/8, L])."""
    import kernels

    rows = []
    H, d = (2, 32) if dry else (12, 64)
    dtype = torch.float32 if dry else torch.bfloat16
    for L in (128, 512):
        B = 2 if dry else (256 if L == 128 else 64)
        g = torch.Generator().manual_seed(0)
        lens = torch.randint(max(1, L // 8), L + 1, (B,), generator=g)
        cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(torch.int32).to(device)
        T = int(lens.sum())
        q, k, v = (torch.randn(T, H, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        flops = 4 * d * H * float((lens.double() ** 2).sum()) * 3.5  # fwd 2 GEMMs + bwd 5 GEMMs
        backends = ["torch"] if dry else ["triton"] + (["flash_attn"] if kernels.dispatch.flash_attn_available() else [])
        results = {}
        for be in backends:
            def step(be=be):
                o = kernels.varlen_attention(q, k, v, cu, cu, L, L, backend=be)
                o.sum().backward()
            if dry:
                t = time.perf_counter()
                step()
                dt = time.perf_counter() - t
            else:
                dt = _time_cuda(step)
            results[be] = dt
        if not dry:  # SDPA on padded input, as a padded implementation would run it
            qp = torch.randn(B, H, L, d, device=device, dtype=dtype, requires_grad=True)
            results["sdpa (padded)"] = _time_cuda(lambda: torch.nn.functional.scaled_dot_product_attention(
                qp, qp, qp).sum().backward())
        base = next(iter(results.values()))
        for be, dt in results.items():
            rows.append([f"attention L<={L}, {B}x{H}x{d}", be, f"{flops / dt / 1e12:.2f}", f"{dt * 1e3:.2f}",
                         f"{base / dt:.2f}x"])
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
                            ["shape", "loss", "peak MiB above inputs", "vs materialised", "seconds (CPU)",
                             "vs materialised", "loss value"], rows, "Peak RSS per subprocess (ru_maxrss).")
    if torch.cuda.is_available() or args.dry_run:
        dev = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
        rows = attention_rows(dev, args.dry_run)
        text += "\n" + write_table("", "Varlen attention fwd + bwd" + (" (DRY RUN, CPU, not a measurement)" if args.dry_run else ""),
                                   ["shape", "backend", "TFLOP/s", "ms", "speed vs first"], rows)
    text += "\n" + machine_line(args.threads) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
