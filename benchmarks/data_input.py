"""Training input start-up at corpus scale (issue 17): a training run's time to its first step,
the shard-set open (quick check) and the full `masklab verify`, at 3 corpus sizes spanning 20x.

Corpora: benchmarks/scale.py's (real text then its word-bigram generator, one fixed WordPiece
tokenizer), prepared here or reused from `--work DIR` (DIR/prep_<MB>mb from `scale --work DIR`).
Start-up = wall-clock seconds of a child process (interpreter start and imports included)
running `train()` on configs/smoke_cpu.yaml with the tiny model of tests/conftest.py for one
step and no eval: "first" has no sample index yet (DATA/index removed, so it is built), "second"
is the same run again in a new out_dir (the index is mapped). RSS = the child's ru_maxrss at
the second start. Rank / worker RssAnon: benchmarks/input_memory.py in a child (the input opened
as train() does, num_workers=2, 40 steps of 32 units at seq_len 64): the max over the steps of
the rank's and of either worker's anonymous RSS (the mapped shard and index pages, file-backed,
are not in it), and the worker's VmHWM (peak total RSS, mapped pages included). Shard open =
`ShardSet(root, "train")` (quick check against prep's stamp), full verify = `masklab verify`'s
check (sha256 of every file), both in a child, min of 3.

    python -m benchmarks.data_input [--quick] [--sizes 2,10,45] [--work DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.child_process import run_child
from benchmarks.results_table import machine_line, rerun_command, write_table

TINY = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
        "data.seq_len=64", "data.batch_size=8", "train.progress=false", "train.tensorboard=false",
        "train.log_every=1", "train.device=cpu"]
ROOT = Path(__file__).resolve().parents[1]


def _child_train(args) -> int:
    import torch

    torch.set_num_threads(1)
    from masklab.config import load_config
    from masklab.pretrain.loop.train import train

    train(load_config(str(ROOT / "configs" / "smoke_cpu.yaml"),
                      TINY + [f"data.shards={args.data}", f"train.out_dir={args.run}", "train.max_steps=1",
                              "train.eval_every=1000", "train.save_every=1000", "data.eval_batches=1"]))
    print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def _child_open(args) -> int:
    from masklab.data_prep.shards import ShardSet, read_manifest
    from masklab.data_prep.verify import verify_split, verify_tokenizer

    root, best_open, best_full = Path(args.data), float("inf"), float("inf")
    for _ in range(3):
        t = time.perf_counter()
        s = ShardSet(root, "train")
        best_open = min(best_open, time.perf_counter() - t)
        t = time.perf_counter()
        manifest = read_manifest(root)
        verify_tokenizer(root, manifest)
        for split in manifest["splits"]:
            verify_split(root, manifest, split, full=True)
        best_full = min(best_full, time.perf_counter() - t)
    print(json.dumps({"open": best_open, "full": best_full, "tokens": s.num_tokens}))
    return 0


def _child_memory(args) -> int:
    from benchmarks.input_memory import measure

    m = measure(args.data, steps=40, workers=2, run_dir=args.run)
    print(json.dumps({"rank_anon": m["rank"]["anon"], "worker_anon": max(w["anon"] for w in m["workers"]),
                      "worker_hwm": max(w["hwm"] for w in m["workers"])}))
    return 0


def _child(*argv) -> tuple[dict, float]:
    t = time.perf_counter()
    out = run_child("benchmarks.data_input", *argv, cwd=ROOT,
                    env={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 0.2, 1, 4 MB")
    ap.add_argument("--sizes", help="corpus sizes in MB (comma separated; default 2,10,45)")
    ap.add_argument("--work", default="", help="benchmarks.scale's --work dir: reuse DIR/prep_<MB>mb when present")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return {"train": _child_train, "open": _child_open, "memory": _child_memory}[args.kind](args)
    sizes = [float(s) for s in (args.sizes or ("0.2,1,4" if args.quick else "2,10,45")).split(",")]
    from benchmarks import scale

    tmp = tempfile.TemporaryDirectory()
    work, scratch = Path(args.work or tmp.name), Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        tokenizer = work / "tokenizer.json"
        for mb in sizes:
            data = work / f"prep_{mb:g}mb"
            if not (data / "manifest.json").is_file():
                corpus = scale.write_corpus(scratch / f"corpus_{mb:g}mb", mb)
                if not tokenizer.is_file():  # train the fixed tokenizer once, on the smallest corpus
                    scale.prep(corpus, scratch / "tok", "")
                    shutil.copy(scratch / "tok" / "tokenizer" / "tokenizer.json", tokenizer)
                scale.prep(corpus, data, str(tokenizer))
            shutil.rmtree(data / "index", ignore_errors=True)
            _, first = _child("--kind", "train", "--data", str(data), "--run", str(scratch / f"run_{mb:g}a"))
            r, second = _child("--kind", "train", "--data", str(data), "--run", str(scratch / f"run_{mb:g}b"))
            o, _ = _child("--kind", "open", "--data", str(data))
            m, _ = _child("--kind", "memory", "--data", str(data), "--run", str(scratch / f"run_{mb:g}m"))
            rows.append([f"{o['tokens']:,}", f"{first:.1f}", f"{second:.1f}", f"{o['open'] * 1e3:.1f}",
                         f"{o['full']:.2f}", f"{r['rss']:.0f}", f"{m['rank_anon']:.0f}", f"{m['worker_anon']:.0f}",
                         f"{m['worker_hwm']:.0f}"])
    finally:
        tmp.cleanup()
    note = (f"{machine_line(1)} Corpora: benchmarks/scale.py (real Debian text, then its word-bigram "
            "generator; fixed WordPiece tokenizer). first / second start: wall s of a child process running a 1-step tiny-model "
            "train() (configs/smoke_cpu.yaml + tests/conftest.py TINY), without / with the sample index on "
            "disk; both include interpreter start, imports and model build. Shard open = ShardSet(root, "
            "'train') quick check; full verify = sha256 of every file (`masklab verify`); min of 3. RSS MB = "
            "ru_maxrss of the second start (1 step, no workers). Rank / worker RssAnon = anonymous RSS (the "
            "mapped shard and sample-index pages are file-backed and not in it) of the rank and of a "
            "DataLoader worker iterating 40 steps with num_workers=2 (benchmarks/input_memory.py; a forked "
            "worker's figure includes pages shared copy-on-write with the rank); worker VmHWM = its peak total "
            "RSS, mapped pages included. Expected: second start, shard open and both RssAnon flat with size, "
            "full verify growing. Command: "
            + rerun_command("benchmarks.data_input", args.quick, args.sizes) + ".")
    write_table(args.out, "Training input start-up at scale",
                ["train tokens", "first start s", "second start s", "shard open ms", "full verify s",
                 "RSS MB", "rank RssAnon MB", "worker RssAnon MB", "worker VmHWM MB"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
