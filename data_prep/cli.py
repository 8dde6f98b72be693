"""`masklab prep`, `masklab verify` (and `masklab pmi`, registered by data_prep.pmi when present)."""
from __future__ import annotations

import argparse

from masklab.data_prep.prep import PrepOptions, prepare


def _prep(args: argparse.Namespace) -> int:
    opts = PrepOptions(source=args.corpus, out=args.out, text_column=args.text_column, tokenizer=args.tokenizer,
                       tokenizer_kind=args.tokenizer_kind, vocab_size=args.vocab_size,
                       lowercase=not args.cased, validation_fraction=args.validation_fraction,
                       max_documents=args.max_documents, cjk_segmenter=args.cjk_segmenter,
                       shard_tokens=args.shard_tokens, num_proc=args.num_proc, seed=args.seed,
                       overwrite=args.overwrite)
    out = prepare(opts)
    print(f"prepared data: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("prep", help="corpus -> tokenizer -> packed token shards",
                       description="Read raw text, train (or load) a tokenizer, and write memory-mapped "
                                   "train/validation token shards with word-start bits and a manifest.")
    p.add_argument("--corpus", default="pydoc",
                   help="'pydoc' (built-in English prose), a directory/file of .txt/.jsonl/.parquet, or a datasets hub name")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--text-column", default="text", help="column holding text in jsonl/parquet/hub data")
    p.add_argument("--tokenizer", help="use this tokenizer.json (or a dir holding one) instead of training")
    p.add_argument("--tokenizer-kind", default="wordpiece", choices=["wordpiece", "unigram"])
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--cased", action="store_true", help="do not lowercase")
    p.add_argument("--validation-fraction", type=float, default=0.05)
    p.add_argument("--max-documents", type=int)
    p.add_argument("--cjk-segmenter", choices=["jieba"], help="group CJK characters into words for whole-word masking")
    p.add_argument("--shard-tokens", type=int, default=50_000_000)
    p.add_argument("--num-proc", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_prep)
    from masklab.data_prep.verify_cli import register as register_verify
    register_verify(sub)
    try:
        from masklab.data_prep.pmi_cli import register as register_pmi
    except ModuleNotFoundError:
        return
    register_pmi(sub)
