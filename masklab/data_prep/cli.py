"""`masklab prep`, `masklab verify` (and `masklab pmi`, registered by data_prep.pmi when present)."""
from __future__ import annotations

import argparse

from masklab.data_prep.prep import EXECUTORS, PrepOptions, prepare
from masklab.data_prep.sources import MAX_DOCUMENT_BYTES


def _prep(args: argparse.Namespace) -> int:
    opts = PrepOptions(source=args.corpus, out=args.out, text_column=args.text_column, tokenizer=args.tokenizer,
                       tokenizer_kind=args.tokenizer_kind, vocab_size=args.vocab_size,
                       lowercase=not args.cased, validation_fraction=args.validation_fraction,
                       max_documents=args.max_documents, cjk_segmenter=args.cjk_segmenter,
                       shard_tokens=args.shard_tokens, num_proc=args.num_proc, seed=args.seed,
                       overwrite=args.overwrite, chunk_bytes=args.chunk_bytes,
                       tokenizer_sample_bytes=args.tokenizer_sample_bytes, executor=args.executor, tasks=args.tasks,
                       max_document_bytes=args.max_document_bytes,
                       partition=args.partition, slurm_time=args.time, cpus_per_task=args.cpus_per_task,
                       mem_per_cpu_gb=args.mem_per_cpu_gb, wait=args.wait)
    out = prepare(opts)
    if args.executor == "slurm" and not args.wait:
        print(f"submitted: {out} appears when the merge job ends")
    else:
        print(f"prepared data: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("prep", help="corpus -> tokenizer -> packed token shards",
                       description="Read raw text (streamed), train (or load) a tokenizer, and write memory-mapped "
                                   "train/validation token shards with word-start bits and a manifest. The output "
                                   "is identical for any --num-proc / --executor / --tasks.")
    p.add_argument("--corpus", default="pydoc",
                   help="'pydoc' (built-in English prose), a file or directory tree of .txt/.jsonl/.json/.parquet "
                        "(also .gz/.bz2/.zst), or a datasets hub name (streamed)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--text-column", default="text", help="column holding text in jsonl/parquet/hub data")
    p.add_argument("--tokenizer", help="use this tokenizer.json (or a dir holding one, e.g. an HF model) instead "
                                       "of training; its padding / truncation are switched off")
    p.add_argument("--tokenizer-kind", default="wordpiece", choices=["wordpiece", "unigram"])
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--tokenizer-sample-bytes", type=int, default=1 << 30,
                   help="train the tokenizer on about this many bytes, drawn from every file (default 1 GiB)")
    p.add_argument("--max-document-bytes", type=int, default=MAX_DOCUMENT_BYTES,
                   help="skip (and count) documents and lines longer than this; lines are read in pieces of "
                        "this size, so memory stays bounded (default 8 MiB)")
    p.add_argument("--cased", action="store_true", help="do not lowercase")
    p.add_argument("--validation-fraction", type=float, default=0.05)
    p.add_argument("--max-documents", type=int, help="keep only the first N documents (with --num-proc 1)")
    p.add_argument("--cjk-segmenter", choices=["jieba"], help="group CJK characters into words for whole-word masking")
    p.add_argument("--shard-tokens", type=int, default=50_000_000, help="most tokens per shard")
    p.add_argument("--chunk-bytes", type=int, default=64 << 20,
                   help="unit of work: files larger than this are split by byte ranges, files under 1/8 of it "
                        "are grouped (default 64 MiB)")
    p.add_argument("--num-proc", type=int, default=1, help="local processes (with --executor local: workers)")
    p.add_argument("--executor", default="none", choices=EXECUTORS,
                   help="none: a local process pool; local / slurm: datatrove tasks (rerun finishes failed tasks)")
    p.add_argument("--tasks", type=int, default=1, help="datatrove tasks (Slurm array size)")
    p.add_argument("--partition", help="Slurm partition (--executor slurm)")
    p.add_argument("--time", default="24:00:00", help="Slurm time limit per task")
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--mem-per-cpu-gb", type=int, default=2)
    p.add_argument("--wait", action="store_true", help="--executor slurm: wait until the output is complete")
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
