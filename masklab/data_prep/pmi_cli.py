"""`masklab pmi` (PMI n-gram table) and `masklab informask-weights` (token weight table)."""
from __future__ import annotations

import json


def _pmi(args) -> int:
    from masklab.data_prep.pmi import build_pmi_table

    split = tuple(float(x) for x in args.split.split(","))
    m = build_pmi_table(args.shards, args.out, args.min_count, args.size, split, overwrite=args.overwrite,
                        engine=args.engine, memory_limit=args.memory_limit)
    print(json.dumps(m, indent=1))
    print(f"PMI table: {args.out} (use masking.unit=pmi masking.pmi_table={args.out})")
    return 0


def _weights(args) -> int:
    from masklab.data_prep.weights import build_token_weights

    m = build_token_weights(args.shards, args.out, overwrite=args.overwrite, rate=args.rate)
    print(json.dumps(m, indent=1))
    print(f"token weights: {args.out} (use masking.informask_weights={args.out} masking.informask_score=pmi|surprisal)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pmi", help="build the PMI n-gram table (n=2..5) for PMI masking",
                       description="Count word n-grams in the training shards and keep the highest "
                                   "min-over-segmentations PMI n-grams per length (Levine et al. 2021).")
    p.add_argument("--shards", required=True, help="a `masklab prep` output directory")
    p.add_argument("--out", required=True)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--size", type=int, default=20000, help="n-grams kept in all")
    p.add_argument("--split", default="0.5,0.25,0.125,0.125", help="fractions for n=2,3,4,5")
    p.add_argument("--engine", choices=("duckdb", "numpy"), default="duckdb",
                   help="duckdb: out of core, memory bounded by --memory-limit; numpy: in memory (small corpora)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB's memory limit (it spills to disk beyond it)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_pmi)
    w = sub.add_parser("informask-weights", help="token weight table for InforMask-style weighted masking",
                       description="Per-token weights for masking.informask_weights: InforMask's token-specific "
                                   "rates from PMI informative relevance (score pmi) and self-information (surprisal).")
    w.add_argument("--shards", required=True, help="a `masklab prep` output directory")
    w.add_argument("--out", required=True)
    w.add_argument("--rate", type=float, default=0.15, help="masking rate of the candidate masks (pmi score)")
    w.add_argument("--overwrite", action="store_true")
    w.set_defaults(func=_weights)
