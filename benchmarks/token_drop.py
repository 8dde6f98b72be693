"""Token Dropping (Hou et al., 2022) vs no dropping: step time, and masked accuracy after training.

1. Step time (fwd + bwd + fused AdamW, process CPU, one thread) of a 12-layer `bert` model with
   model.token_drop.rate=0.5 over the middle half (layers [3, 9)) vs the same model without
   dropping, on the same batches (15% masking): pydoc paragraphs (<= 128, batch 32) and pydoc
   documents chunked to 512 (batch 8). Warm-up steps, then paired steps in rotated order;
   median and [min-max] of the per-step ratio. Target (issue 20): <= 0.75x.
2. Quality: the smoke recipe (configs/smoke_cpu.yaml, 4x256) trained for the same number of steps
   with and without dropping (rate 0.5 over layers [1, 3)), then `masklab evaluate` on the
   validation split at the fixed 15% evaluation masking. Each run is its own subprocess.

    python -m benchmarks.token_drop [--steps 6] [--train-steps 300] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.results_table import machine_line, write_table
from benchmarks.timing import spread
from benchmarks.texts import make_batches, samples, tokenizer

ROOT = Path(__file__).resolve().parents[1]
REGIMES = {"paragraphs <= 128, batch 32": ("paragraphs", 128, 32), "chunks of 512, batch 8": ("chunks", 512, 8)}


def step_times(layers: int, hidden: int, steps: int, warmup: int = 2) -> list[list]:
    from masklab.config import load_config
    from masklab.pretrain.model import build_model

    tok = tokenizer()
    start, end = layers // 4, layers - layers // 4  # the middle half
    rows = []
    for label, (regime, max_len, batch) in REGIMES.items():
        smp = samples(tok, "pydoc", regime, batch * (steps + warmup), max_len=max_len)
        data, info = make_batches(tok, smp, batch, steps + warmup)
        ov = ["data.shards=unused", f"model.num_layers={layers}", f"model.hidden_size={hidden}",
              f"model.num_heads={max(1, hidden // 64)}", f"model.intermediate_size={4 * hidden}",
              "model.hidden_dropout=0"]
        systems = {}
        for name, extra in [("no dropping", []),
                            ("token dropping", ["model.token_drop.rate=0.5", f"model.token_drop.start_layer={start}",
                                                f"model.token_drop.end_layer={end}"])]:
            torch.manual_seed(0)
            cfg = load_config(None, ov + extra)
            m = build_model(cfg.model, info, cfg.masking).train()
            systems[name] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True))
        times = {k: [] for k in systems}
        names = list(systems)
        for i, (ub, _) in enumerate(data):
            for k in (names if i % 2 == 0 else names[::-1]):  # rotate who runs first
                m, opt = systems[k]
                t = time.process_time()
                out = m(ub)
                (out["loss_sum"] / out["num_predictions"]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i >= warmup:
                    times[k].append(time.process_time() - t)
        ratio = [d / p for d, p in zip(times["token dropping"], times["no dropping"])]
        tokens = sum(int(ub.num_tokens) for ub, _ in data[warmup:]) / steps
        for k in names:
            rows.append([label, k, f"{tokens:,.0f}", spread([t * 1000 for t in times[k]], " ms"),
                         spread(ratio, "x") if k == "token dropping" else "1.00x"])
    return rows


def _cli(*args, timeout=3600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"masklab {' '.join(args[:2])} failed: {r.stderr[-2000:]}")
    return r


def quality(train_steps: int, work: Path, quick: bool) -> list[list]:
    data = work / "data"
    _cli("prep", "--corpus", "pydoc", "--out", str(data), *(["--max-documents", "600", "--vocab-size", "2000"]
                                                              if quick else []))
    size = (["model.num_layers=4", "model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=128"]
            if quick else [])
    rows = []
    for name, extra in [("no dropping", []),
                        ("token dropping (0.5, layers [1, 3))", ["model.token_drop.rate=0.5",
                                                                 "model.token_drop.start_layer=1",
                                                                 "model.token_drop.end_layer=3"])]:
        run = work / name.split()[0]
        t = time.time()
        _cli("train", "configs/smoke_cpu.yaml", f"data.shards={data}", f"train.out_dir={run}",
             f"train.max_steps={train_steps}", f"train.save_every={train_steps}", f"train.eval_every={train_steps}",
             "train.progress=false", "train.tensorboard=false", *size, *extra)
        wall = time.time() - t
        ev = json.loads(_cli("evaluate", str(run), "--shards", str(data), "--split", "validation",
                             "--pll-sentences", "0").stdout)
        rows.append([name, train_steps, f"{wall:.0f}", f"{ev['loss']:.3f}", f"{ev['mlm_acc']:.3f}",
                     f"{ev['unigram_acc']:.3f}", ev["predictions"]])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="measured steps per regime (after 2 warm-up steps)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--train-steps", type=int, default=300, help="training steps of each quality run")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke check of this script)")
    ap.add_argument("--out", default="benchmarks/results_token_drop.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.layers, args.hidden, args.train_steps = 2, 4, 64, 4
    torch.set_num_threads(1)
    speed = step_times(args.layers, args.hidden, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        qual = quality(args.train_steps, Path(tmp), args.quick)
    ratios = {r[0]: r[4] for r in speed if r[1] == "token dropping"}
    verdicts = []
    for inp, cell in ratios.items():
        med = float(cell.split("x")[0])
        verdicts.append(f"{inp}: {med:.2f}x, " + ("target <= 0.75x met" if med <= 0.75 else
                                                   f"target <= 0.75x MISSED by {med / 0.75 - 1:.0%}"))
    a = write_table("", f"Token Dropping, {args.layers}x{args.hidden} bert, rate 0.5 over layers "
                    f"[{args.layers // 4}, {args.layers - args.layers // 4}): step time (fwd+bwd+AdamW, CPU fp32)",
                    ["input", "system", "tokens per step", "step ms, median [min-max]", "vs no dropping (paired)"],
                    speed, "; ".join(verdicts) + ". The dropping layers are half of the model and see half of the tokens: "
                    "their linear work halves (attention's quadratic part quarters), so ~0.75x of the layer time is "
                    "what short inputs can reach; embeddings, head, optimizer and the row gather/scatter do not "
                    f"shrink. Same initial weights and batches (15% masking); {args.steps} paired "
                    "steps after 2 warm-up steps, order rotated. " + machine_line(1))
    b = write_table("", "Token Dropping: held-out masked accuracy after the same number of steps (smoke recipe)",
                    ["system", "steps", "train wall s", "val loss", "masked acc (15%, fixed seed)", "unigram acc",
                     "predictions"], qual,
                    "`masklab evaluate RUN --shards DATA --split validation` after `masklab train "
                    "configs/smoke_cpu.yaml` (4x256, pydoc); one seed each: a difference below ~0.01 is noise. "
                    + machine_line(1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(a + "\n" + b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
