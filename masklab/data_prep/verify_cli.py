"""`masklab verify DATA`: the full sha256 check of a prepared data directory, on demand."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from masklab.data_prep.shards import read_manifest
from masklab.data_prep.verify import content_digest, verify_split, verify_tokenizer


def _verify(args: argparse.Namespace) -> int:
    root = Path(args.data)
    t0 = time.perf_counter()
    manifest = read_manifest(root)
    verify_tokenizer(root, manifest)
    n_files = 0
    for split in manifest["splits"]:
        verify_split(root, manifest, split, full=True)
        n_files += 3 * len(manifest["splits"][split])
    print(f"verified {root}: tokenizer + {n_files} shard files match manifest.json (sha256), content digest "
          f"{content_digest(manifest)[:16]}, {time.perf_counter() - t0:.1f}s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("verify", help="full sha256 check of a prepared data directory",
                       description="Hash every shard file and the tokenizer against manifest.json, and record "
                                   "the result so training starts only run the quick check (data_prep/verify.py).")
    p.add_argument("data", help="a directory written by `masklab prep`")
    p.set_defaults(func=_verify)
