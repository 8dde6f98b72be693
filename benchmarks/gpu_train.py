"""GPU mode of the pretraining benchmark: BERT-base steps at sequence length 128 and 512, bf16.

Ours (unpadded, sparse head, Triton kernels, or flash_attn when installed) vs transformers'
BertForMaskedLM (SDPA, padded to the batch max), same samples and masks; real tokens/s and
MFU against the GPU's dense bf16 peak (measured with a large matmul in the same run).
Without CUDA, `--dry-run` runs the same code on CPU at tiny shapes with the torch backend,
so this path does not rot until a GPU is available.

    python -m benchmarks.gpu_train [--dry-run] [--steps 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from benchmarks.results_table import machine_line, write_table
from benchmarks.texts import make_batches, pydoc_samples


def synthetic_long(samples, max_len: int, rng) -> list[np.ndarray]:
    """A realistic length mix up to max_len: consecutive pydoc paragraphs joined into documents."""
    out, cur = [], []
    for s in samples:
        body = s[1:-1]
        if cur and (sum(len(c) for c in cur) + len(body) + 2 > max_len or rng.random() < 0.3):
            out.append(np.concatenate([[s[0]], *cur, [s[-1]]]))
            cur = []
        cur.append(body[: max_len - 2])
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(seq_len: int, steps: int, device: torch.device, dry: bool) -> list[list]:
    from transformers import BertConfig, BertForMaskedLM

    from masklab import kernels
    from masklab.config import load_config
    from masklab.pretrain.loop.flops import step_flops
    from masklab.pretrain.loop.metrics import matmul_peak_flops
    from masklab.pretrain.model import build_model

    tok, samples = pydoc_samples(seq_len)
    if seq_len > 128:
        samples = synthetic_long(samples, seq_len, np.random.default_rng(0))
    shape = dict(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128) if dry else \
        dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
    batch = 4 if dry else (256 if seq_len == 128 else 64)
    data, info = make_batches(tok, samples, batch, steps + 3)
    cfg = load_config(None, ["data.shards=unused"] + [f"model.{k}={v}" for k, v in shape.items()])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours = build_model(cfg.model, info).to(device)
    hf = BertForMaskedLM(BertConfig(vocab_size=info.vocab_size, hidden_size=shape["hidden_size"],
                                    num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
                                    intermediate_size=shape["intermediate_size"], max_position_embeddings=512,
                                    attn_implementation="sdpa")).to(device)
    backend = "torch" if device.type != "cuda" else "auto"
    kernels.set_backend(backend)
    systems = {"HF BertForMaskedLM (SDPA, padded)": hf, f"ours (unpadded, sparse head, {backend})": ours}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=device.type == "cuda") for k, m in systems.items()}
    times = {k: [] for k in systems}
    for i, (ub, hf_in) in enumerate(data):
        ub = ub.to(device)
        hf_in = {k: v.to(device) for k, v in hf_in.items()}
        for k, m in systems.items():
            sync(device)
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                if m is hf:
                    loss = m(**hf_in).loss
                else:
                    out = m(ub)
                    loss = out["loss_sum"] / out["num_predictions"]
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            sync(device)
            if i >= 3:
                times[k].append((time.perf_counter() - t, ub.num_tokens,
                                 step_flops(cfg.model, info.vocab_size, (ub.cu_seqlens[1:] - ub.cu_seqlens[:-1]).cpu(),
                                            ub.num_predictions)))
    peak = matmul_peak_flops(device, dtype, n=256 if dry else 8192)
    rows, base = [], None
    for k, v in times.items():
        tps = statistics.median(n / t for t, n, _ in v)
        base = base or tps
        mfu = statistics.median(f / t for t, _, f in v) / peak
        rows.append([seq_len, k, f"{tps:,.0f}", f"{tps / base:.2f}x", f"{mfu:.0%}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, torch backend")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results_gpu_train.md")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        print("no CUDA device: run with --dry-run to exercise this path on CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    rows = []
    for L in (128, 512):
        rows += run(L, 2 if args.dry_run else args.steps, device, args.dry_run)
    title = "BERT-base pretraining step, bf16" + (" (DRY RUN: CPU, tiny shapes; not a measurement)" if args.dry_run else "")
    write_table(args.out, title, ["seq len", "system", "real tokens/s", "vs HF", "MFU (vs measured matmul peak)"],
                rows, machine_line(torch.get_num_threads()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
