"""`masklab verify DATA`: the full sha256 check of a prepared data directory, on demand."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from masklab.data_prep.content import check_shard
from masklab.data_prep.shards import ShardSet, read_manifest
from masklab.data_prep.tokenizer import load_tokenizer
from masklab.data_prep.verify import content_digest, verify_bindings, verify_split, verify_tokenizer
from masklab.errors import DataError


def _verify(args: argparse.Namespace) -> int:
    root = Path(args.data)
    t0 = time.perf_counter()
    manifest = read_manifest(root)
    verify_tokenizer(root, manifest)
    _, info = load_tokenizer(root / "tokenizer")
    vocab = manifest["tokenizer"]["vocab_size"]
    if info.vocab_size != vocab:
        raise DataError(f"{root / 'manifest.json'} says vocab size {vocab} but {root / 'tokenizer'} has "
                        f"{info.vocab_size}: re-run `masklab prep`")
    verify_bindings(root, manifest)
    n_files = n_tokens = 0
    for split in manifest["splits"]:
        verify_split(root, manifest, split, full=True)
        n_files += 3 * len(manifest["splits"][split])
        shards = ShardSet(root, split, verify="none")
        for entry, shard in zip(manifest["splits"][split], shards.shards):  # content: what sha256 cannot tell
            check_shard(shard, vocab, f"{root / split / entry['name']}")
            n_tokens += len(shard.tokens)
    print(f"verified {root}: tokenizer + {n_files} shard files match manifest.json (sha256); content of "
          f"{n_tokens} tokens checked (ids < vocab {vocab}, offsets, word starts); content digest "
          f"{content_digest(manifest)[:16]}, {time.perf_counter() - t0:.1f}s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("verify", help="full sha256 check of a prepared data directory",
                       description="Hash every shard file and the tokenizer against manifest.json, and record "
                                   "the result so training starts only run the quick check (data_prep/verify.py).")
    p.add_argument("data", help="a directory written by `masklab prep`")
    p.set_defaults(func=_verify)
