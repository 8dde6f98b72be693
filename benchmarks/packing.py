"""`data.packing` x step budget at seq_len 512 on the paragraph corpus (issue 17): tokens per
step (mean, CV) and real tokens per CPU second, all six systems measured in one run.

Corpus: `masklab prep --corpus pydoc --vocab-size 2000` (every pydoc_data.topics paragraph is a
document; the table note gives their mean length). Systems: packing none / docs / concat, each with a sample budget
(data.batch_size=8: 8 x 512 = 4096 tokens at full sequences) and a token budget
(data.batch_tokens=4096), through the training code (Collator, make_budget, StepDataset; one rank,
no accumulation) and the tiny model of tests/conftest.py (2x64, fp32, CPU, one thread).
Tokens per step: real tokens ([CLS]/[SEP] included, no padding exists) of the first
`--plan-steps` steps of each system's plan (mean and coefficient of variation). Timing: warm-up
steps, then every step runs the six systems in rotated order, each step = collate (the
DataLoader worker's work, here in-process) + fwd + bwd + AdamW, in process CPU time; tokens/s
is per step (step tokens / step CPU s), median [min-max] over the measured steps.

    python -m benchmarks.packing [--quick] [--steps 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.results_table import machine_line, rerun_command, write_table
from benchmarks.timing import spread

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
        "data.seq_len=512", "train.device=cpu", "model.hidden_dropout=0"]
BUDGETS = {"samples (batch_size=8)": ["data.batch_size=8"], "tokens (batch_tokens=4096)": ["data.batch_tokens=4096"]}


def prep(out: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "prep", "--corpus", "pydoc", "--out", str(out),
                        "--vocab-size", "2000"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if r.returncode:
        raise RuntimeError(f"masklab prep failed: {r.stderr[-2000:]}")
    return out


class System:
    """One (packing, budget): its collator, plan iterator and a freshly seeded tiny model."""

    def __init__(self, data: Path, packing: str, budget: list[str], plan_steps: int):
        from masklab.config import load_config
        from masklab.data_prep.shards import ShardSet
        from masklab.pretrain.data.collator import Collator
        from masklab.pretrain.model import build_model
        from masklab.pretrain.data.steps import StepDataset, make_budget

        cfg = load_config(str(ROOT / "configs" / "smoke_cpu.yaml"),
                          TINY + budget + [f"data.shards={data}", f"data.packing={packing}"])
        shards = ShardSet(data, "train")
        self.collator = Collator(cfg, shards)
        self.dataset = StepDataset(self.collator, budget=make_budget(self.collator, cfg, 0, 1))
        plans = list(self.dataset.budget.plans(0, plan_steps, 0))
        per_step = [sum(int(self.collator.unit_lengths(f, n).sum()) for f, n in ranges) for _, ranges in plans]
        self.units = statistics.mean(sum(n for _, n in ranges) for _, ranges in plans)
        self.tokens_mean, self.tokens_cv = float(np.mean(per_step)), float(np.std(per_step) / np.mean(per_step))
        self.plans = iter(plans)
        torch.manual_seed(0)
        self.model = build_model(cfg.model, shards.tokenizer, cfg.masking, cfg.kernels.backend).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        self.times, self.collate, self.rates, self.seqs = [], [], [], []

    def step(self, record: bool) -> None:
        t = time.process_time()
        batches = self.dataset[next(self.plans)]
        c = time.process_time() - t
        for b in batches:
            out = self.model(b)
            (out["loss_sum"] / out["num_predictions"]).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        dt = time.process_time() - t
        if record:
            tokens = sum(int(b.input_ids.numel()) for b in batches)
            self.times.append(dt), self.collate.append(c), self.rates.append(tokens / dt)
            self.seqs.append(sum(len(b.cu_seqlens) - 1 for b in batches))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per system (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--plan-steps", type=int, default=200, help="steps of each plan the tokens/step figures cover")
    ap.add_argument("--quick", action="store_true", help="2 measured steps, 1 warm-up, 20 plan steps")
    ap.add_argument("--out", default="benchmarks/results_packing.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.plan_steps = 2, 1, 20
    torch.set_num_threads(1)
    n = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        data = prep(Path(tmp) / "pydoc")
        systems = {(p, b): System(data, p, ov, max(args.plan_steps, n)) for p in ("none", "docs", "concat")
                   for b, ov in BUDGETS.items()}
        names = list(systems)
        for i in range(n):
            for k in names[i % len(names):] + names[:i % len(names)]:  # rotate who runs first
                systems[k].step(record=i >= args.warmup)
    base = statistics.median(systems[names[0]].rates)
    para = systems[names[0]].tokens_mean / systems[names[0]].units  # none: a unit is one paragraph
    rows = []
    for (packing, budget), s in systems.items():
        rows.append([packing, budget, f"{s.units:,.1f}", f"{statistics.mean(s.seqs):,.1f}", f"{s.tokens_mean:,.0f}",
                     f"{s.tokens_cv:.2f}", spread([t * 1e3 for t in s.times], " ms"),
                     f"{statistics.median(s.collate) * 1e3:.1f}", spread(s.rates, ""),
                     f"{statistics.median(s.rates) / base:.2f}x"])
    note = (f"Corpus: pydoc paragraphs (`masklab prep --corpus pydoc --vocab-size 2000`), seq_len 512; tiny "
            f"model 2x64 (tests/conftest.py TINY), fp32, one thread. Units and tokens per step: mean over the "
            f"first {max(args.plan_steps, n)} steps of each plan; CV = std / mean of the tokens per step. Step "
            f"= collate + fwd + bwd + AdamW in process CPU time, {args.steps} measured steps after {args.warmup} "
            "warm-up, the six systems in rotated order in one process; tokens/s per step, median [min-max]. "
            "Expected: with a sample budget, tokens per step follow the unit size (none: one paragraph, "
            f"{para:.0f} tokens on average with [CLS]/[SEP], per unit) and vary; a token budget fixes them "
            "(CV near 0); docs / concat fill 512-token sequences; none keeps one paragraph per sequence "
            "(many short sequences, small steps under a sample budget); concat attends over whole 512-token windows (attention across documents), so its "
            "attention work per token is larger than docs', whose sequences are single paragraphs. "
            f"{machine_line(1)} Command: {rerun_command('benchmarks.packing', args.quick)}.")
    write_table(args.out, "Packing x step budget at seq_len 512, paragraph corpus (tiny model, CPU)",
                ["packing", "budget", "units/step", "sequences/step (timed steps)", "tokens/step", "tokens/step CV",
                 "step ms, median [min-max]", "collate ms", "real tokens/s, median [min-max]",
                 "tokens/s vs none + samples"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
