"""The stages of `bash benchmarks/gpu_first.sh` (issue 31): each appends its rows to $OUT/results.jsonl and
its section to $OUT/summary.md as soon as it has them, so a timeout keeps what was measured.

    python -m benchmarks.gpu_first preflight|smoke|timings|train [--dry-run] --out DIR

preflight: versions, CUDA, interpreter off, masklab importable (exit 3 with one line on failure).
smoke:     the compiled Triton kernels (attention fwd+bwd, fused loss, row gather) once, against torch.
timings:   varlen attention fwd+bwd, Triton vs padded SDPA (and flash_attn when importable), L = 128 /
           512 / 1024; the fused MLM loss vs materialised logits (ms, peak MiB).
train:     BERT-base bf16 training step on synthetic ids (no corpus): ours eager, ours compiled, HF SDPA
           (padded); tokens/s, MFU vs the spec peak and vs a measured 8192^3 matmul, host syncs counted
           with torch.cuda.set_sync_debug_mode.
--dry-run: the same code on CPU at tiny shapes (the Triton kernels in the interpreter): CI keeps it alive.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


class Report:
    """Appends to $OUT/results.jsonl (one object a line, written at once) and $OUT/summary.md."""

    def __init__(self, out: str, stage: str):
        self.dir, self.stage = Path(out), stage
        self.dir.mkdir(parents=True, exist_ok=True)

    def row(self, **rec) -> dict:
        rec = {"stage": self.stage, **rec}
        with open(self.dir / "results.jsonl", "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        print(json.dumps(rec, default=str), flush=True)
        return rec

    def table(self, title: str, header: list[str], rows: list[list] = ()) -> None:
        """A markdown table: the header now, rows now or later (`line`), so a timeout keeps the rows so far."""
        self._md([f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        for r in rows:
            self.line(r)

    def line(self, cells: list) -> None:
        self._md(["| " + " | ".join(str(c) for c in cells) + " |"])

    def _md(self, lines: list[str]) -> None:
        with open(self.dir / "summary.md", "a") as f:
            f.write("\n".join(lines) + "\n")


def interpreter_gap(e: Exception, dry: bool) -> bool:
    """A dry run on an older Triton's interpreter (the device's 3.6.0 in the rehearsal venv): its `range()`
    over a loaded length fails under numpy 2.x ("only 0-dimensional arrays ..."). The device runs the
    kernels compiled, where this cannot happen; the dry run records the row and goes on."""
    return dry and type(e).__name__ == "InterpreterError" and "0-dimensional" in str(e)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device, warmup: int, reps: int) -> tuple[float, float]:
    """-> (median ms, peak MiB above the start; nan on CPU) of fn()."""
    for _ in range(warmup):
        fn()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else float("nan")
    return float(np.median(times)), peak


def pack(lens, H, D, dtype, dev, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    cu = torch.tensor([0] + np.cumsum(lens).tolist(), dtype=torch.int32, device=dev)
    q, k, v = (torch.randn(int(sum(lens)), H, D, generator=g).to(dev, dtype).requires_grad_() for _ in range(3))
    return q, k, v, cu, max(lens)


# ---------------------------------------------------------------------------------------------- preflight
def preflight(args) -> int:
    rep = Report(args.out, "preflight")
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "")}
    problems = []
    for mod in ("triton", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "omegaconf",
                "flash_attn"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - every missing piece is reported, flash_attn is optional
            info[mod] = f"missing ({type(e).__name__})"
            if mod != "flash_attn":
                problems.append(f"{mod} is not importable")
    try:
        import masklab.kernels  # noqa: F401
        import masklab.pretrain.loop.train  # noqa: F401
        import masklab.pretrain.model  # noqa: F401
        info["masklab"] = str(Path(__import__("masklab").__file__).parent)
        info["omegaconf_from"] = str(Path(__import__("omegaconf").__file__).parent.parent)
    except Exception as e:  # noqa: BLE001
        problems.append(f"masklab is not importable ({type(e).__name__}: {e}); PYTHONPATH={os.environ.get('PYTHONPATH')}")
    if not args.dry_run:
        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA device")
        else:
            info["device"] = torch.cuda.get_device_name()
            info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        if info["TRITON_INTERPRET"] not in ("", "0"):
            problems.append("TRITON_INTERPRET is set: the kernels would run in the interpreter, not compiled")
    rep.row(**info, ok=not problems, problems=problems)
    rep.table("Preflight", ["key", "value"], [[k, v] for k, v in info.items()] + [["problems", "; ".join(problems)
                                                                                     or "none"]])
    if problems:
        print("gpu_first preflight FAILED: " + "; ".join(problems), file=sys.stderr)
        return 3
    return 0


# -------------------------------------------------------------------------------------------------- smoke
def smoke(args) -> int:
    from masklab import kernels
    from masklab.kernels.dispatch import triton_interpreting

    rep = Report(args.out, "smoke")
    dev = torch.device("cpu" if args.dry_run else "cuda")
    if not args.dry_run:
        assert not triton_interpreting(), "TRITON_INTERPRET is on: this stage must run compiled kernels"
    rows, bad = [], 0
    dtypes = [torch.float32] if args.dry_run else [torch.bfloat16, torch.float16]
    for dtype in dtypes:
        for D in ([32] if args.dry_run else [64, 128]):
            q, k, v, cu, L = pack([5, 64, 130] if not args.dry_run else [5, 40], 2, D, dtype, dev)
            t = time.perf_counter()
            try:
                out = kernels.varlen_attention(q, k, v, cu, cu, L, L, backend="triton")
            except Exception as e:  # noqa: BLE001
                if not interpreter_gap(e, args.dry_run):
                    raise
                rows.append(rep.row(op="varlen_attention fwd+bwd", dtype=str(dtype)[6:], head_dim=D, first_call_s="",
                                    max_abs_err="", grad_max_abs_err="", ok=None, note=f"interpreter: {e}"[:200]))
                continue
            grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
            sync(dev)
            first_s = time.perf_counter() - t
            qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
            ref = kernels.varlen_attention(qf, kf, vf, cu, cu, L, L, backend="torch")
            rgrads = torch.autograd.grad(ref, (qf, kf, vf), torch.ones_like(ref))
            err = float((out.float() - ref).abs().max())
            gerr = max(float((a.float() - b).abs().max()) for a, b in zip(grads, rgrads))
            ok = bool(torch.isfinite(out).all()) and err < 5e-2 and gerr < 2e-1
            bad += not ok
            rows.append(rep.row(op="varlen_attention fwd+bwd", dtype=str(dtype)[6:], head_dim=D, first_call_s=first_s,
                                max_abs_err=err, grad_max_abs_err=gerr, ok=ok))
    T, Dm, V, M = (256, 64, 1000, 40) if args.dry_run else (4096, 768, 30522, 600)
    g = torch.Generator().manual_seed(0)
    dt = torch.float32 if args.dry_run else torch.bfloat16
    h = torch.randn(T, Dm, generator=g).to(dev, dt)
    params = [(torch.randn(*s, generator=g) * 0.05).to(dev, dt) for s in ((Dm, Dm), (Dm,), (Dm,), (Dm,), (V, Dm), (V,))]
    params[2] = params[2] + 1.0
    pos = torch.randperm(T, generator=g)[:M].to(dev)
    lab = torch.randint(0, V, (M,), generator=g).to(dev)
    t = time.perf_counter()
    try:
        lt, _ = kernels.masked_token_loss(h, pos, lab, *params, backend="triton")
        sync(dev)
        first_s = time.perf_counter() - t
        lr, _ = kernels.masked_token_loss(h.float(), pos, lab, *[p.float() for p in params], backend="torch")
        rel = float((lt.float() - lr).abs() / lr.abs())
        rows.append(rep.row(op="masked_token_loss", dtype=str(dt)[6:], head_dim="", first_call_s=first_s,
                            max_abs_err=rel, grad_max_abs_err="", ok=rel < 2e-2))
        bad += rel >= 2e-2
    except Exception as e:  # noqa: BLE001
        if not interpreter_gap(e, args.dry_run):
            raise
        rows.append(rep.row(op="masked_token_loss", dtype=str(dt)[6:], head_dim="", first_call_s="", max_abs_err="",
                            grad_max_abs_err="", ok=None, note=f"interpreter: {e}"[:200]))
    idx = torch.randint(0, T, (M,), generator=g).to(dev)
    same = torch.equal(kernels.gather_rows(h, idx, backend="triton"), h[idx])
    rows.append(rep.row(op="gather_rows", dtype=str(dt)[6:], head_dim="", first_call_s="", max_abs_err=0 if same else 1,
                        grad_max_abs_err="", ok=same))
    bad += not same
    rep.table("Compiled kernel smoke" + (" (DRY RUN: CPU interpreter)" if args.dry_run else ""),
              ["op", "dtype", "head dim", "first call s", "max err", "grad max err", "ok", "note"],
              [[r["op"], r["dtype"], r["head_dim"], _f(r["first_call_s"]), _f(r["max_abs_err"]),
                _f(r["grad_max_abs_err"]), r["ok"], r.get("note", "")] for r in rows])
    return 1 if bad else 0


def _f(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------------------------ timings
def padded_sdpa(q, k, v, cu, L):
    """The padded baseline: scatter to [B, H, L, d], SDPA with a key mask, gather back."""
    B, H, D = cu.numel() - 1, q.shape[1], q.shape[2]
    lens = cu[1:] - cu[:-1]
    valid = torch.arange(L, device=q.device)[None, :] < lens[:, None]  # [B, L]
    dense = [torch.zeros(B, L, H, D, device=q.device, dtype=q.dtype).masked_scatter(valid[..., None, None], x)
             .transpose(1, 2) for x in (q, k, v)]
    o = F.scaled_dot_product_attention(*dense, attn_mask=valid[:, None, None, :])
    return o.transpose(1, 2)[valid]


def timings(args) -> int:
    from masklab import kernels
    from masklab.kernels.dispatch import flash_attn_available

    rep = Report(args.out, "timings")
    dev = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    H, D = (2, 32) if args.dry_run else (12, 64)
    warm, reps = (0, 1) if args.dry_run else (2, 5)
    rows = []
    rep.table(f"Kernel timings ({'DRY RUN: CPU' if args.dry_run else torch.cuda.get_device_name()}, "
              f"{str(dtype)[6:]}, H={H}, d={D}; median of {reps}, peak MiB above the inputs)",
              ["op", "L", "sequences", "tokens", "system", "ms", "peak MiB", "error"])

    def add(**r):
        rows.append(rep.row(**r))
        rep.line([r["op"], r["L"], r["sequences"], r["tokens"], r["system"], f"{r['ms']:.3f}", f"{r['peak_mib']:.0f}",
                  r.get("error", r.get("note", ""))])

    for L in ((16,) if args.dry_run else (128, 512, 1024)):
        n_seq = 2 if args.dry_run else max(8, 65536 // L)
        rng = np.random.default_rng(L)
        lens = rng.integers(L // 2, L + 1, n_seq).tolist()
        q, k, v, cu, mx = pack(lens, H, D, dtype, dev)
        g = torch.randn_like(q)
        systems = {"triton": lambda: kernels.varlen_attention(q, k, v, cu, cu, mx, mx, backend="triton"),
                   "padded SDPA": lambda: padded_sdpa(q, k, v, cu, L)}
        if flash_attn_available() and not args.dry_run:
            systems["flash_attn"] = lambda: kernels.varlen_attention(q, k, v, cu, cu, mx, mx, backend="flash_attn")
        for name, fn in systems.items():
            try:
                ms, mib = timed(lambda fn=fn: torch.autograd.grad(fn(), (q, k, v), g), dev, warm, reps)
                add(op="attention fwd+bwd", L=L, sequences=n_seq, tokens=sum(lens), system=name, ms=ms, peak_mib=mib)
            except Exception as e:  # noqa: BLE001 - one failing system must not lose the others' numbers
                kind = "note" if interpreter_gap(e, args.dry_run) else "error"
                add(op="attention fwd+bwd", L=L, sequences=n_seq, tokens=sum(lens), system=name, ms=float("nan"),
                    peak_mib=float("nan"), **{kind: f"{type(e).__name__}: {e}"[:300]})
    T, Dm, V, M = (256, 64, 1000, 40) if args.dry_run else (16384, 768, 30522, 2458)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(T, Dm, generator=gen).to(dev, dtype).requires_grad_()
    params = [(torch.randn(*s, generator=gen) * 0.05).to(dev, dtype).requires_grad_()
              for s in ((Dm, Dm), (Dm,), (Dm,), (Dm,), (V, Dm), (V,))]
    pos = torch.randperm(T, generator=gen)[:M].to(dev)
    lab = torch.randint(0, V, (M,), generator=gen).to(dev)

    def fused():
        loss, _ = kernels.masked_token_loss(h, pos, lab, *params, backend="triton")
        return torch.autograd.grad(loss, [h, *params])

    def materialised():
        w, b, lw, lb, dw, db = params
        x = F.layer_norm(F.gelu(F.linear(h[pos], w, b)), (Dm,), lw, lb, 1e-12)
        loss = F.cross_entropy(F.linear(x, dw, db).float(), lab, reduction="sum")
        return torch.autograd.grad(loss, [h, *params])

    for name, fn in (("fused (Triton)", fused), ("materialised logits", materialised)):
        try:
            ms, mib = timed(fn, dev, warm, reps)
        except Exception as e:  # noqa: BLE001
            kind = "note" if interpreter_gap(e, args.dry_run) else "error"
            add(op="MLM loss fwd+bwd", L="", sequences="", tokens=T, system=name, ms=float("nan"),
                peak_mib=float("nan"), **{kind: f"{type(e).__name__}: {e}"[:300]})
            continue
        add(op="MLM loss fwd+bwd", L="", sequences="", tokens=T, system=f"{name}, V={V}, M={M}", ms=ms, peak_mib=mib)
    return 1 if any("error" in r for r in rows) else 0


# -------------------------------------------------------------------------------------------------- train
def synthetic_batch(n_seq: int, max_len: int, vocab: int, seed: int):
    """An UnpaddedBatch of random ids (lengths U[max_len/2, max_len], 15% predicted) and the padded HF inputs."""
    from masklab.pretrain.data.collator import make_batch

    rng = np.random.default_rng(seed)
    lens = rng.integers(max_len // 2, max_len + 1, n_seq)
    ids, pos, labels, is_mask, n_pred, off = [], [], [], [], [], 0
    for L in lens:
        x = rng.integers(1000, vocab, L)
        x[0], x[-1] = 101, 102
        p = np.sort(rng.choice(np.arange(1, L - 1), max(1, int(0.15 * L)), replace=False))
        labels.append(x[p].copy())
        x[p] = 103
        ids.append(x), pos.append(p + off), is_mask.append(np.ones(len(p), bool)), n_pred.append(len(p))
        off += L
    b = make_batch(ids, pos, labels, is_mask, lens, n_pred, np.arange(n_seq), 0, 0.15, int(lens.sum()))
    Lm = int(lens.max())
    hf_ids = torch.zeros(n_seq, Lm, dtype=torch.long)
    hf_lab = torch.full((n_seq, Lm), -100, dtype=torch.long)
    for i, (x, p, y) in enumerate(zip(ids, pos, labels)):
        hf_ids[i, :len(x)] = torch.from_numpy(x)
        hf_lab[i, p - int(b.cu_seqlens[i])] = torch.from_numpy(y)
    return b, {"input_ids": hf_ids, "attention_mask": (torch.arange(Lm)[None] < torch.from_numpy(lens)[:, None]).long(),
               "labels": hf_lab}


def count_syncs(fn, dev: torch.device):
    """-> number of synchronizing CUDA calls fn() made (torch.cuda.set_sync_debug_mode); None on CPU."""
    if dev.type != "cuda":
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def train_step(args) -> int:
    from transformers import BertConfig, BertForMaskedLM

    from masklab.config import load_config
    from masklab.pretrain.loop.flops import step_flops
    from masklab.pretrain.loop.metrics import matmul_peak_flops
    from masklab.pretrain.loop.peak import probe_size, spec_peak_flops
    from masklab.pretrain.model import build_model

    rep = Report(args.out, "train")
    dev = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    shape = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128) if args.dry_run else \
        dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
    vocab = 2000 if args.dry_run else 30522
    info = SimpleNamespace(vocab_size=vocab, mask_id=103, special_ids=(0, 100, 101, 102, 103))
    cfg = load_config(None, ["data.shards=unused", "model.hidden_dropout=0", "model.pad_vocab_multiple=64"]
                      + [f"model.{k}={v}" for k, v in shape.items()])
    n_peak, reps_peak = (256, 2) if args.dry_run else probe_size(dev)
    measured = matmul_peak_flops(dev, dtype, n=n_peak, reps=reps_peak)
    spec = spec_peak_flops(dev, dtype)
    rep.row(op="matmul peak", n=n_peak, dtype=str(dtype)[6:], measured_tflops=measured / 1e12,
            spec_tflops=spec / 1e12 if spec else None)
    if not args.dry_run:
        torch._logging.set_logs(graph_breaks=True, recompiles=True)  # into log.txt
    rows = []
    rep.table(f"{'BERT-base' if not args.dry_run else 'tiny BERT (DRY RUN: CPU)'} training step, {str(dtype)[6:]}, "
              f"synthetic ids; matmul peak {n_peak}^3 measured {measured / 1e12:.1f} TFLOP/s"
              + (f", spec {spec / 1e12:.0f}" if spec else ""),
              ["L", "sequences", "system", "tokens/s", "step ms", "first step s", "MFU (measured)", "MFU (spec)",
               "host syncs", "graph breaks", "error"])

    def add(**r):
        rows.append(rep.row(**r))
        rep.line([r["L"], r["sequences"], r["system"], f"{r['tokens_per_s']:,.0f}", f"{r['step_ms']:.1f}",
                  _f(r["first_step_s"]), _pct(r["mfu_measured"]), _pct(r["mfu_spec"]), r["host_syncs"],
                  r["graph_breaks"], r.get("error", "")])

    steps = 1 if args.dry_run else args.steps
    for L, n_seq in (((32, 4),) if args.dry_run else ((128, 256), (512, 64))):
        batches = [synthetic_batch(n_seq, L, vocab, s) for s in range(steps + 2)]
        torch.manual_seed(0)
        hf = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=shape["hidden_size"],
                                        num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                                        intermediate_size=shape["intermediate_size"], max_position_embeddings=512,
                                        attn_implementation="sdpa")).to(dev)
        systems = {"ours eager": build_model(cfg.model, info).to(dev)}
        compiled = build_model(cfg.model, info).to(dev)
        for layer in compiled.layers:  # as compile_layers; CPU dry run: dynamo only (inductor takes minutes there)
            layer.compile(backend="eager" if args.dry_run else "inductor")
        systems["ours compiled"] = compiled
        systems["HF BertForMaskedLM (SDPA, padded)"] = hf
        for name, model in systems.items():
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
            torch._dynamo.utils.counters.clear()

            def step(ub, hf_in, model=model, opt=opt, is_hf=model is hf):
                with torch.autocast(dev.type, dtype=dtype, enabled=dev.type == "cuda"):
                    if is_hf:
                        loss = model(**hf_in).loss
                    else:
                        out = model(ub)
                        loss = out["loss_sum"] / out["num_predictions"]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            times, syncs, t_first = [], None, None
            try:
                for i, (ub, hf_in) in enumerate(batches):
                    ub, hf_in = ub.to(dev), {k: v.to(dev) for k, v in hf_in.items()}
                    sync(dev)
                    t = time.perf_counter()
                    if i == 2:
                        syncs = count_syncs(lambda: step(ub, hf_in), dev)
                    else:
                        step(ub, hf_in)
                    sync(dev)
                    dt = time.perf_counter() - t
                    if i == 0:
                        t_first = dt
                    elif i >= 2:
                        seq = (ub.cu_seqlens[1:] - ub.cu_seqlens[:-1]).cpu()
                        times.append((dt, ub.num_tokens, step_flops(cfg.model, vocab, seq, ub.num_predictions)))
                tps = float(np.median([n / t for t, n, _ in times]))
                fps = float(np.median([f / t for t, _, f in times]))
                c = torch._dynamo.utils.counters
                breaks = (f'{sum(c["graph_break"].values())} breaks, {c["stats"]["unique_graphs"]} graphs'
                          if "compiled" in name else "")  # graphs > 1 per shape bucket: recompiles (log.txt)
                add(op="BERT training step", L=L, sequences=n_seq, system=name, tokens_per_s=tps,
                    step_ms=float(np.median([t for t, _, _ in times])) * 1e3, first_step_s=t_first,
                    mfu_measured=fps / measured, mfu_spec=fps / spec if spec else None, host_syncs=syncs,
                    graph_breaks=breaks)
            except Exception as e:  # noqa: BLE001 - one failing system must not lose the others' numbers
                add(op="BERT training step", L=L, sequences=n_seq, system=name, tokens_per_s=float("nan"),
                    step_ms=float("nan"), first_step_s=t_first, mfu_measured=None, mfu_spec=None, host_syncs=syncs,
                    graph_breaks="", error=f"{type(e).__name__}: {e}"[:300])
            del opt
        del systems, hf
    return 1 if any("error" in r for r in rows) else 0


def _pct(x) -> str:
    return f"{x:.0%}" if isinstance(x, float) else "n/a"


STAGES = {"preflight": preflight, "smoke": smoke, "timings": timings, "train": train_step}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=list(STAGES))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes")
    ap.add_argument("--out", required=True, help="the $OUT folder")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
