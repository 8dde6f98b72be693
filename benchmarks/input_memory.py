"""Memory of the training input (issue 17): a rank's and its DataLoader workers' anonymous RSS
while they iterate training batches, to show that it does not grow with the data set.

The child opens the input exactly as `train()` does (`run_state.setup`: shards, the memory-mapped
sample index, the Collator and its step budget; then `steps.step_loader` with `data.num_workers`
workers) on configs/smoke_cpu.yaml with the tiny model's data shapes, and iterates `--steps` steps.
After every step it reads /proc/<pid>/status of the rank and of each worker (the workers' pids
from the loader's iterator). Figures:
- RssAnon: anonymous resident memory (heap, Python objects, numpy arrays, torch tensors). Pages of
  the memory-mapped shards and index are file-backed: they count in VmRSS / VmHWM but not here,
  so "no growth beyond the mapped files" means RssAnon flat with size. /proc has no anonymous
  high-water mark: the figure is the max over the per-step samples.
- VmHWM: peak total RSS (file-backed pages included), for reference.
A forked worker's RssAnon includes the pages it shares copy-on-write with the rank.

    python -m benchmarks.input_memory --child --data DIR [--steps 40] [--workers 2] [--packing none]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
        "data.seq_len=64", "data.batch_size=32", "train.progress=false", "train.tensorboard=false",
        "train.device=cpu", "data.eval_batches=1"]


def proc_status(pid="self") -> dict:
    """-> {"anon": RssAnon MB, "rss": VmRSS MB, "hwm": VmHWM MB} of a process (missing -> {})."""
    keys = {"RssAnon": "anon", "VmRSS": "rss", "VmHWM": "hwm"}
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            name, _, value = line.partition(":")
            if name in keys:
                out[keys[name]] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def measure(data: str, steps: int = 40, workers: int = 2, packing: str = "none", run_dir: str = "") -> dict:
    """Iterate `steps` training steps of the input pipeline -> {"rank": {...}, "workers": [{...}],
    "tokens": tokens iterated, "steps": steps}: each {...} the max of proc_status over the steps."""
    import torch

    torch.set_num_threads(1)
    from masklab.config import load_config
    from masklab.pretrain.loop.run_state import setup
    from masklab.pretrain.data.steps import step_loader

    cfg = load_config(str(ROOT / "configs" / "smoke_cpu.yaml"),
                      TINY + [f"data.shards={data}", f"data.num_workers={workers}", f"data.packing={packing}",
                              f"train.out_dir={run_dir or Path(data) / 'unused_run'}", f"train.max_steps={steps}"])
    run = setup(cfg)
    loader = step_loader(run.dataset, 0, steps, cfg.data.num_workers, pin=False)
    rank, per_worker, tokens = {}, {}, 0

    def sample(pids):
        for k, v in proc_status().items():
            rank[k] = max(rank.get(k, 0.0), v)
        for pid in pids:
            w = per_worker.setdefault(pid, {})
            for k, v in proc_status(pid).items():
                w[k] = max(w.get(k, 0.0), v)

    it = iter(loader)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    for step_batches in it:
        tokens += sum(int(b.input_ids.numel()) for b in step_batches)
        sample(pids)
    return {"rank": rank, "workers": [per_worker[p] for p in pids], "tokens": tokens, "steps": steps,
            "units": len(run.collator.samples)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--packing", default="none")
    ap.add_argument("--run", default="")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.data, args.steps, args.workers, args.packing, args.run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
