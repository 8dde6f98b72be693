"""Pretraining throughput: ours vs HF on the same weights, batches and masks (CPU fp32).

Real (non-pad) tokens/s of forward + backward + fused AdamW. Cells: family (bert, modernbert)
x size x text (pydoc, Python reST docs) x regime (paragraphs <= 128 bs 32; documents chunked to
512 bs 8); see benchmarks/texts.py and benchmarks/peers.py. In a cell every system starts from
our weights exported into HF, and a loss-parity check (eval mode, one batch) stands beside each
row: a row more than 1e-4 relative off ours is marked INVALID. Timing: one thread, process CPU
time, warm-up steps, then >= 5 measured steps with the order of the systems (and of a matmul
peak probe) rotated every step; medians with min-max over steps; "vs" columns are medians of
per-step ratios (the same batch on both sides). Utilisation = executed matmul FLOPs / the
`torch.mm` peak timed inside the same rotation.

    python -m benchmarks.train_throughput [--sizes tiny,small] [--families bert,modernbert]
        [--texts pydoc,pydocs-rst] [--regimes paragraphs,chunks512] [--steps 5] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from benchmarks import peers, texts
from benchmarks.results_table import machine_line, write_table
from benchmarks.timing import matmul_probe, median, spread

# issue 21 targets: ours (best exact row) / strongest HF peer, per family and regime
TARGETS = {("bert", "chunks512"): 1.15, ("bert", "paragraphs"): 2.5,
           ("modernbert", "chunks512"): 1.2, ("modernbert", "paragraphs"): 2.0}
UTIL_TARGET = 0.85  # of the measured matmul peak, at 6x384 (size "small")


def time_cell(systems: list, cell, steps: int, warmup: int) -> dict:
    """-> {name: [seconds per measured step]} plus "_peak": [FLOP/s per step]."""
    opts = {s.name: torch.optim.AdamW(s.model.parameters(), lr=1e-4, fused=True) for s in systems}
    probe = matmul_probe()
    names = [s.name for s in systems] + ["_peak"]
    by_name = {s.name: s for s in systems}
    times = {n: [] for n in names}
    for i in range(warmup + steps):
        ub, hf_in = cell.batches[i]
        k = i % len(names)
        for n in names[k:] + names[:k]:  # rotated: no system always runs first (or after the same one)
            if n == "_peak":
                v = probe()
            else:
                s = by_name[n]
                t = time.process_time()
                s.loss(s.model, ub, hf_in).backward()
                opts[n].step()
                opts[n].zero_grad(set_to_none=True)
                v = time.process_time() - t
            if i >= warmup:
                times[n].append(v)
    return times


def bench_cell(family: str, size: str, cell, steps: int, warmup: int) -> tuple[list[list], list[str]]:
    systems = peers.build_systems(family, size, cell.info)
    rel = peers.parity(systems, *cell.batches[0])
    times = time_cell(systems, cell, steps, warmup)
    measured = cell.batches[warmup:warmup + steps]
    tokens = [ub.num_tokens for ub, _ in measured]
    peak = median(times["_peak"])
    naive = next((s.name for s in systems if s.name.startswith(peers.NAIVE)), None)
    strong = peers.strongest_peer(systems)
    vocab = systems[0].model.vocab_size
    rows, checks = [], []
    for s in systems:
        t = times[s.name]
        tps = [n / x for n, x in zip(tokens, t)]
        flops = [peers.executed_flops(s, vocab, ub, hf) for ub, hf in measured]
        util = median([f / x / peak for f, x in zip(flops, t)])

        def vs(other):
            return "-" if other is None or other == s.name else spread([o / x for o, x in zip(times[other], t)], "x")

        ok = rel[s.name] <= peers.PARITY_TOL
        rows.append([family, size, cell.text, cell.regime, s.name, spread(tps, ""), vs(naive), vs(strong),
                     f"{util:.0%}", f"{rel[s.name]:.1e}" + ("" if ok else " INVALID")])
    ours = [s.name for s in systems if not s.padded and rel[s.name] <= peers.PARITY_TOL]
    best = min(ours, key=lambda n: median(times[n])) if ours else None  # least step time on the same batches
    if best:
        ratio = median([o / x for o, x in zip(times[strong], times[best])])
        goal = TARGETS[(family, cell.regime)]
        verdict = "met" if ratio >= goal else f"MISSED by {100 * (1 - ratio / goal):.1f}%"
        checks.append(f"{family} {size} {cell.text} {cell.regime}: {best} = {ratio:.2f}x {strong} "
                      f"(target >= {goal}x): {verdict}")
    if size == "small":
        for s in systems:
            if not s.padded:
                u = rows[systems.index(s)][8]
                short = UTIL_TARGET * 100 - float(u.rstrip("%"))
                checks.append(f"{family} {size} {cell.text} {cell.regime}: {s.name} utilisation {u} "
                              f"(target >= {UTIL_TARGET:.0%}): " + ("met" if short <= 0 else
                                                                     f"MISSED by {short:.0f} points"))
    return rows, checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--families", default="bert,modernbert")
    ap.add_argument("--texts", default="pydoc,pydocs-rst")
    ap.add_argument("--regimes", default="paragraphs,chunks512")
    ap.add_argument("--steps", type=int, default=5, help="measured steps per cell (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run for tests: micro size (4x64), pydoc, 2 measured steps after 1 warm-up")
    ap.add_argument("--out", default="benchmarks/results_train.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.texts, args.steps, args.warmup = "micro", "pydoc", 2, 1
    torch.set_num_threads(args.threads)
    present, absent_note = texts.available_texts()
    tok = texts.tokenizer()
    rows, checks, notes = [], [], []
    for text in args.texts.split(","):
        if text not in present:
            print(f"skipping text {text}: not available here", flush=True)
            continue
        for regime in args.regimes.split(","):
            cell = texts.build_cell(tok, text, regime, args.warmup + args.steps)
            notes.append(cell.note)
            for size in args.sizes.split(","):
                for family in args.families.split(","):
                    r, c = bench_cell(family, size, cell, args.steps, args.warmup)
                    rows += r
                    checks += c
                    print(f"done: {family} {size} {text} {regime}", flush=True)
    note = ("Real tokens/s: median [min-max] over measured steps; vs columns: median [min-max] of per-step ratios. "
            + " ".join(notes) + " " + absent_note + "\n\nTargets (issue 21):\n" + "\n".join(f"- {c}" for c in checks)
            + "\n\nWhy utilisation stays short of 85% at 6x384: the 13-20% of step time it misses is time "
            "not spent in matmuls at the probe's speed: work that is not a matmul (LayerNorm, GELU, softmax, the "
            "row gathers of the sparse head, the fused AdamW over every parameter) and matmuls on thin shapes "
            "(the per-sequence attention products, the head on the masked rows) that run below the peak of the "
            "large square probe. This run does not split the two."
            + f"\n\n{args.steps} measured steps after {args.warmup} warm-up per cell. {machine_line(args.threads)}")
    write_table(args.out, "Pretraining throughput (real tokens/s, fwd+bwd+fused AdamW, CPU fp32, same weights)",
                ["family", "size", "text", "regime", "system", "real tokens/s", "vs HF padded", "vs strongest HF",
                 "utilisation", "loss parity (rel)"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
