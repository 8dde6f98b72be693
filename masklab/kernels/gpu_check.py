"""GPU readiness without a GPU: compile every Triton kernel config for sm_90 / sm_80 offline.

For each kernel, each config it ships (block sizes, warps, stages), each dtype and head dim we
support: `triton.compile` for the target, then `cuobjdump --dump-resource-usage` on the cubin
(registers, shared memory, local memory = spills) and whether the PTX uses wgmma (sm_90).
A production config that fails to compile or spills fails the check, unless ALLOWED_SPILLS
names it with a reason. Results are cached on disk by (source hash, config, target).

    masklab gpu-check [--target sm_90 sm_80] [--subset] [--jobs N]
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from masklab.errors import MaskLabError

TARGETS = {"sm_90": 90, "sm_80": 80}
CACHE = Path(os.environ.get("MASKLAB_CACHE", Path.home() / ".cache" / "masklab")) / "gpu_check"
# (kernel, dtype, head_dim, config) patterns allowed to spill, each with the reason
ALLOWED_SPILLS: dict[str, str] = {
    r"^attn_[a-z_]+\|fp32 ": "fp32 attention on GPU is a debugging path (tf32 dots, 2x the register tiles); "
                             "training feeds bf16 under autocast",
}


@dataclass
class Result:
    kernel: str
    target: str
    variant: str
    config: str
    ok: bool
    registers: int = 0
    shared_bytes: int = 0
    spill_bytes: int = 0
    wgmma: bool = False
    error: str = ""
    allowed: str = ""

    @property
    def key(self) -> str:
        return f"{self.kernel}|{self.variant}|{self.config}"


def _tools():
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        raise MaskLabError(f"gpu-check needs Triton's compiler: {e} (pip install triton)") from None
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        cuobjdump = shutil.which("cuobjdump")
        if cuobjdump is None:
            raise MaskLabError("gpu-check needs cuobjdump (bundled with triton's NVIDIA backend, or CUDA's binutils: "
                               "apt-get install nvidia-cuda-toolkit / pip install nvidia-cuda-cupti)")
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists() and not shutil.which("ptxas"):
        raise MaskLabError("gpu-check needs ptxas (bundled with triton's NVIDIA backend); reinstall triton")
    return triton, ASTSource, GPUTarget, str(cuobjdump)


# Integer arguments as Triton's launcher passes them: i32 (values < 2^31), and the ones that are
# multiples of 16 in production (strides of [T, H, d] / [T, 3, H, d] tensors, head dim, length bucket)
# carry the divisibility-16 specialisation, as every pointer does (torch allocations are 16-byte aligned).
DIVISIBLE_INTS = ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_vt", "stride_vh", "stride_ot",
                  "stride_oh", "stride_dot", "stride_doh", "stride_gt", "stride_gh", "D", "seq_bucket", "stride_l",
                  "F")


def _signature(fn, types: dict) -> tuple[dict, dict]:
    """types: argument -> Triton type (`*bf16`, `fp32`, `i32`) -> (signature in fn order, attrs)."""
    sig = {a: types[a] for a in fn.arg_names if a in types}
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a, t in sig.items()
             if t.startswith("*") or a in DIVISIBLE_INTS}
    return sig, attrs


def _attention_jobs(dt: str, hd: int, window: int, positions: bool = False) -> list[dict]:
    from masklab.kernels import triton_attention_bwd as AB
    from masklab.kernels import triton_attention_fwd as AF
    from masklab.kernels import triton_attention_tiles as AT

    variant = f"{dt} d{hd}" + (f" w{window}" if window else "") + (" pos" if positions else "")
    const = {"HEAD_DIM": hd, "WINDOW": window, "HAS_POS": positions, "UPCAST": False}
    ints = ["stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_vt", "stride_vh", "stride_ot", "stride_oh",
            "stride_dot", "stride_doh", "stride_gt", "stride_gh", "total_q", "H", "D", "seq_bucket"]
    types = {n: f"*{dt}" for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")} | {n: "i32" for n in ints}
    types |= {"LSE": "*fp32", "DELTA": "*fp32", "cu_q": "*i32", "cu_k": "*i32", "POS": "*i32", "sm_scale": "fp32"}
    hc = AT.head_class(hd)
    jobs = []
    for kernel, fn, table in (("attn_fwd", AF._fwd_kernel, AT.FWD_CONFIGS),
                              ("attn_bwd_dkdv", AB._bwd_dkdv_kernel, AT.BWD_DKDV_CONFIGS),
                              ("attn_bwd_dq", AB._bwd_dq_kernel, AT.BWD_DQ_CONFIGS)):
        sig, attrs = _signature(fn, types)
        for m, n, w, s in table[hc]:
            jobs.append(dict(kernel=kernel, fn=fn, sig=sig, attrs=attrs, variant=variant,
                             const=const | {"BLOCK_M": m, "BLOCK_N": n}, warps=w, stages=s))
    return jobs


def _jobs(subset: bool) -> list[dict]:
    """Every (kernel, signature, constexprs, launch options) we ship."""
    from masklab.kernels import triton_attention_bwd as AB
    from masklab.kernels import triton_attention_tiles as AT
    from masklab.kernels import triton_mlm_loss as L
    from masklab.kernels import triton_rows as R

    jobs = []
    # subset (the CI test, ~1 min cold on 2 cores): the training dtype, BERT-base and the largest head
    # dim, every shipped config; the full list adds fp16/fp32, d32 and the windowed variants (row offsets
    # and true positions)
    dtypes = ["bf16"] if subset else ["bf16", "fp16", "fp32"]
    head_dims = [64, 128] if subset else [32, 64, 128]
    for dt in dtypes:
        for hd in head_dims:
            for window, pos in ([(0, False)] if subset else [(0, False), (128, False), (128, True)]):
                jobs += _attention_jobs(dt, hd, window, pos)
            types = {"O": f"*{dt}", "DO": f"*{dt}", "DELTA": "*fp32"}
            types |= {n: "i32" for n in ("stride_ot", "stride_oh", "stride_dot", "stride_doh", "total_q", "D")}
            sig, attrs = _signature(AB._bwd_preprocess, types)
            jobs.append(dict(kernel="attn_bwd_pre", fn=AB._bwd_preprocess, sig=sig, attrs=attrs, variant=f"{dt} d{hd}",
                             const={"HEAD_DIM": hd, "BLOCK_T": AT.PRE_BLOCK_T}, warps=AT.PRE_NUM_WARPS, stages=1))
        types = {"LOGITS": f"*{dt}", "stride_l": "i32", "LABELS": "*i64", "RUN_M": "*fp32", "RUN_L": "*fp32",
                 "TGT": "*fp32", "BEST": "*fp32", "BEST_IDX": "*i64", "M": "i32", "C": "i32", "v_offset": "i32",
                 "LSE": "*fp32", "GRAD": "*fp32"}
        sig, attrs = _signature(L._ce_fwd_chunk, types)
        jobs.append(dict(kernel="mlm_ce_fwd", fn=L._ce_fwd_chunk, sig=sig, attrs=attrs, variant=dt,
                         const={"BLOCK_M": L.BLOCK_ROWS, "BLOCK_C": L.BLOCK_COLS}, warps=4, stages=2))
        sig, attrs = _signature(L._ce_bwd_chunk, types)
        jobs.append(dict(kernel="mlm_ce_bwd", fn=L._ce_bwd_chunk, sig=sig, attrs=attrs, variant=dt,
                         const={"BLOCK_M": L.BLOCK_ROWS, "BLOCK_C": L.BWD_BLOCK_COLS}, warps=4, stages=2))
        for atomic in (False, True):
            types = {"SRC": f"*{dt}", "DST": "*fp32" if atomic else f"*{dt}", "SRC_IDX": "*i64", "DST_IDX": "*i64",
                     "n": "i32", "F": "i32"}
            sig, attrs = _signature(R._copy_rows, types)
            jobs.append(dict(kernel="rows_copy" + ("_atomic" if atomic else ""), fn=R._copy_rows, sig=sig,
                             attrs=attrs, variant=dt, const={"HAS_SRC_IDX": True, "HAS_DST_IDX": True,
                                                             "ATOMIC": atomic, "BLOCK_R": R.BLOCK_R,
                                                             "BLOCK_F": R.MAX_BLOCK_F}, warps=4, stages=1))
    return jobs


def needs_wgmma(r: "Result") -> bool:
    """Production attention GEMM tiles on Hopper must run on wgmma (fp32 is a debugging path)."""
    return r.target == "sm_90" and r.kernel in ("attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq") and \
        not r.variant.startswith("fp32")


def _source_hash() -> str:
    # every Triton module: a kernel's cache entry must also change when a @triton.jit helper it calls
    # (in its own module or another one) does
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("triton_*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _compile_one(job: dict, target: str, tools) -> Result:
    triton, ASTSource, GPUTarget, cuobjdump = tools
    cfg = "x".join(str(v) for k, v in job["const"].items() if k.startswith("BLOCK_")) + \
        f" w{job['warps']} s{job['stages']}"
    res = Result(job["kernel"], target, job["variant"], cfg, ok=False)
    key = hashlib.sha256(json.dumps([_source_hash(), triton.__version__, target, job["sig"], str(job["attrs"]),
                                     {k: str(v) for k, v in job["const"].items()}, job["warps"], job["stages"]],
                                    sort_keys=True).encode()).hexdigest()
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        return Result(**json.loads(cached.read_text()))
    sig = dict(job["sig"]) | {k: "constexpr" for k in job["const"]}
    try:
        src = ASTSource(job["fn"], sig, job["const"], attrs=job["attrs"])
        k = triton.compile(src, target=GPUTarget("cuda", TARGETS[target], 32),
                           options={"num_warps": job["warps"], "num_stages": job["stages"]})
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "k.cubin"
            p.write_bytes(k.asm["cubin"])
            out = subprocess.run([cuobjdump, "--dump-resource-usage", str(p)], capture_output=True, text=True,
                                 timeout=60).stdout
        m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", out)
        if not m:
            raise RuntimeError(f"could not read resource usage from cuobjdump: {out[:200]}")
        reg, stack, _shared_static, local = map(int, m.groups())
        res.registers, res.spill_bytes = reg, stack + local
        res.shared_bytes = int(k.metadata.shared)
        res.wgmma = "wgmma" in k.asm.get("ptx", "")
        res.ok = True
    except Exception as e:  # a compile failure is a result, not a crash of the checker
        res.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(asdict(res)))
    return res


def run_checks(targets=("sm_90",), subset: bool = False, jobs: Optional[int] = None) -> list[Result]:
    for t in targets:
        if t not in TARGETS:
            raise MaskLabError(f"unsupported gpu-check target '{t}': supported are {', '.join(TARGETS)}")
    from masklab.kernels.dispatch import triton_interpreting

    if triton_interpreting():
        raise MaskLabError("gpu-check compiles real GPU code: unset TRITON_INTERPRET (the interpreter replaces the "
                           "kernels with Python functions at import)")
    tools = _tools()
    work = [(j, t) for t in targets for j in _jobs(subset)]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as ex:
        results = list(ex.map(lambda a: _compile_one(a[0], a[1], tools), work))
    for r in results:
        for pattern, reason in ALLOWED_SPILLS.items():
            if re.search(pattern, r.key):
                r.allowed = reason
    return results


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if not r.ok or (r.spill_bytes > 0 and not r.allowed) or (needs_wgmma(r) and not r.wgmma)]


def table(results: list[Result]) -> str:
    lines = ["| target | kernel | variant | config | regs | smem (B) | spill (B) | wgmma | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        status = "FAIL: " + r.error if not r.ok else ("spills (allowed: " + r.allowed + ")" if r.spill_bytes and r.allowed
                                                       else "FAIL: spills" if r.spill_bytes
                                                       else "FAIL: no wgmma" if needs_wgmma(r) and not r.wgmma else "ok")
        lines.append(f"| {r.target} | {r.kernel} | {r.variant} | {r.config} | {r.registers} | {r.shared_bytes} | "
                     f"{r.spill_bytes} | {'yes' if r.wgmma else 'no'} | {status} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="masklab gpu-check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except MaskLabError as e:  # a usage error (bad target, interpreter on): one line, exit 2 like argparse
        print(f"masklab gpu-check: error: {e}", file=sys.stderr)
        return 2


def add_args(ap) -> None:
    ap.add_argument("--target", nargs="+", default=["sm_90", "sm_80"], help=f"targets ({', '.join(TARGETS)})")
    ap.add_argument("--subset", action="store_true", help="bf16, head dims 64/128, no window: every config (fast)")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--out", help="also write the table to this markdown file")


def _run(args) -> int:
    results = run_checks(tuple(args.target), subset=args.subset, jobs=args.jobs)
    text = table(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    bad = failures(results)
    print(f"\n{len(results)} compiled configs, {len(bad)} failing")
    return 1 if bad else 0
