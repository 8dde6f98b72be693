"""PMI table build at corpus scale: build time per million tokens and peak RSS at three corpus
sizes spanning 20x, for the out-of-core DuckDB engine (memory bounded by --memory-limit) and the
in-memory numpy engine.

Corpora: pydoc prepared with the default tokenizer (`masklab prep` defaults), then word-bigram
Markov text trained on it (benchmarks/markov_corpus.py: real words and local order, distinct
n-grams growing with size). Each build runs in its own subprocess; peak RSS is that process's
ru_maxrss (DuckDB runs in-process, so it is included); time is wall-clock seconds of
`build_pmi_table` (min_count 5, 20k n-grams kept).

    python -m benchmarks.pmi_scale [--quick] [--sizes 0.5,2.5,10] [--memory-limit 1GB] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.child_process import run_child
from benchmarks.results_table import machine_line, rerun_command, write_table


def _child(args) -> int:
    from masklab.data_prep.pmi import build_pmi_table

    t = time.perf_counter()
    m = build_pmi_table(args.shards, args.table, progress=False, engine=args.engine, memory_limit=args.memory_limit,
                        overwrite=True)
    print(json.dumps({"seconds": time.perf_counter() - t, "tokens": m["tokens"], "kept": sum(m["kept"].values()),
                      "distinct_5grams": m["distinct_ngrams"].get("5", 0),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def _measure(shards: Path, engine: str, memory_limit: str, work: Path) -> dict:
    return run_child("benchmarks.pmi_scale", "--shards", str(shards), "--table", str(work / f"pmi_{engine}"),
                     "--engine", engine, "--memory-limit", memory_limit)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 0.1, 0.5, 2 M tokens")
    ap.add_argument("--sizes", help="corpus sizes in millions of tokens (comma separated)")
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shards", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="duckdb", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    sizes = [float(s) for s in (args.sizes or ("0.1,0.5,2" if args.quick else "0.5,2.5,10")).split(",")]
    from benchmarks.markov_corpus import WordBigram, write_corpus
    from masklab.data_prep import PrepOptions, ShardSet, prepare

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = prepare(PrepOptions(source="pydoc", out=str(work / "pydoc"), validation_fraction=0))
        model = WordBigram(ShardSet(src, "train"))
        for mtok in sizes:
            data = write_corpus(str(src), str(work / "gen"), int(mtok * 1e6), seed=0, model=model)
            for engine in ("duckdb", "numpy"):
                r = _measure(data, engine, args.memory_limit, work)
                rows.append([f"{r['tokens'] / 1e6:.2f}", engine, f"{r['seconds']:.1f}",
                             f"{r['seconds'] / r['tokens'] * 1e6:.2f}", f"{r['peak_rss_mb']:.0f}",
                             f"{r['distinct_5grams']:,}"])
    note = (f"{machine_line(1)} DuckDB memory limit {args.memory_limit}. Generator: word-bigram Markov chain "
            "trained on pydoc (benchmarks/markov_corpus.py). Command: "
            + rerun_command("benchmarks.pmi_scale", args.quick) + ".")
    write_table(args.out, "PMI table build at scale (min_count 5, 20k n-grams)",
                ["M tokens", "engine", "build s", "s / M tokens", "peak RSS MB", "distinct 5-grams"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
