"""Late-mask insertion ("Mask More and Mask Later") vs input masking at a 50% masking rate.

Step time (fwd + bwd + AdamW) of our `bert` preset on the same samples and masks; the late
model inserts [MASK] at layer L-2, so layers below see only the visible half of the tokens.
Goal: late / input <= 0.8. Default model 12x384 (MiniLM's width, 12 layers), 30522-token
vocabulary. One thread, process time, interleaved, medians.

    python -m benchmarks.late_masking [--steps 6] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from benchmarks.results_table import machine_line, write_table
from benchmarks.texts import pydoc_samples


def batches(tok, samples, rate: float, n: int, batch: int = 32, seed: int = 0):
    from masklab.data_prep.tokenizer import tokenizer_info
    from masklab.config import load_config
    from masklab.pretrain.data.collator import make_batch
    from masklab.pretrain.masking import build_masker, sample_rng

    cfg = load_config(None, ["data.shards=unused", f"masking.rate={rate}"])
    info = tokenizer_info(tok)
    masker = build_masker(cfg.masking, info)
    order = np.random.default_rng(seed).permutation(len(samples))
    out = []
    for s in range(n):
        parts = [[] for _ in range(6)]
        off, n_maskable = 0, 0
        for j, r in enumerate(order[s * batch:(s + 1) * batch]):
            t = samples[r]
            m = masker.mask_sample(t, np.ones_like(t, dtype=np.uint8), sample_rng(seed, s, j), rate)
            for lst, v in zip(parts, (m.input_ids, m.positions + off, m.labels, m.is_mask_token, len(t),
                                      len(m.positions))):
                lst.append(v)
            off += len(t)
            n_maskable += m.num_maskable
        out.append(make_batch(*parts, order[s * batch:(s + 1) * batch], s, rate, n_maskable, late=True))
    return out, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layers", type=int, default=12)
    # MiniLM's width: at 256 the 30k-vocab head (the same work in both modes) is a third of the step
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--out", default="benchmarks/results_late.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from masklab.config import load_config
    from masklab.pretrain.model import build_model

    tok, samples = pydoc_samples()
    data, info = batches(tok, samples, 0.5, args.steps + 2)
    ov = ["data.shards=unused", f"model.num_layers={args.layers}", f"model.hidden_size={args.hidden}",
          f"model.num_heads={args.hidden // 64}", f"model.intermediate_size={4 * args.hidden}", "masking.rate=0.5"]
    systems = {}
    for label, extra in [("input masking (50%)", []),
                         (f"late insertion at layer {args.layers - 2} (50%)",
                          ["masking.insertion=late", f"masking.insert_layer={args.layers - 2}"])]:
        torch.manual_seed(0)
        cfg = load_config(None, ov + extra)
        m = build_model(cfg.model, info, cfg.masking)
        systems[label] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True))
    times = {k: [] for k in systems}
    for i, b in enumerate(data):
        for k, (m, opt) in systems.items():
            t = time.process_time()
            out = m(b)
            (out["loss_sum"] / out["num_predictions"]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:
                times[k].append(time.process_time() - t)
    base = statistics.median(times["input masking (50%)"])
    rows = [[k, f"{statistics.median(v) * 1000:.0f}", f"{statistics.median(v) / base:.2f}x"] for k, v in times.items()]
    write_table(args.out, f"Late-mask insertion, {args.layers}x{args.hidden} bert, batch 32 pydoc paragraphs",
                ["system", "step time (ms, process CPU)", "vs input masking"], rows, machine_line(1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
