"""`masklab prep`: corpus -> tokenizer -> train/validation shards + manifest, atomically.

Everything is written through `masklab.atomic.atomic_dir` (temp dir, fsync, rename onto `<out>`),
so a failure leaves the output directory as it was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.atomic import atomic_dir
from masklab.data_prep.corpus import ReadStats, read_corpus
from masklab.data_prep.shards import FORMAT, write_shards
from masklab.data_prep.tokenizer import TOKENIZER_FILE, file_sha256, load_tokenizer, save_tokenizer, train_tokenizer
from masklab.data_prep.words import word_starts
from masklab.errors import DataError

log = logging.getLogger("masklab.data_prep")


@dataclass
class PrepOptions:
    source: str = "pydoc"
    out: str = "runs/data"
    text_column: str = "text"
    tokenizer: Optional[str] = None  # existing tokenizer.json / dir; None = train one
    tokenizer_kind: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True
    validation_fraction: float = 0.05
    max_documents: Optional[int] = None
    cjk_segmenter: Optional[str] = None  # jieba
    shard_tokens: int = 50_000_000
    num_proc: int = 1
    seed: int = 0
    overwrite: bool = False


def _is_validation(text: str, fraction: float, seed: int) -> bool:
    # content hash, not row order: the split is stable when the corpus is re-read or re-ordered
    h = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def prepare(opts: PrepOptions) -> Path:
    out = Path(opts.out)
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise DataError(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
    if not 0.0 <= opts.validation_fraction < 1.0:
        raise DataError(f"validation fraction {opts.validation_fraction} must lie in [0, 1)")
    t0 = time.time()
    stats = ReadStats()
    ds = read_corpus(opts.source, opts.text_column, opts.max_documents, stats)
    log.info("read %d documents from %s (%d files, %d invalid UTF-8 lines skipped)",
             stats.documents, opts.source, stats.files, stats.invalid_utf8_lines)

    with atomic_dir(out) as tmp:
        if opts.tokenizer:
            tok, _ = load_tokenizer(opts.tokenizer)
        else:
            log.info("training a %s tokenizer (vocab %d)", opts.tokenizer_kind, opts.vocab_size)
            tok = train_tokenizer(_texts(ds), vocab_size=opts.vocab_size, kind=opts.tokenizer_kind,
                                  lowercase=opts.lowercase)
        save_tokenizer(tok, tmp / "tokenizer")
        _, info = load_tokenizer(tmp / "tokenizer")

        def encode(batch):
            encs = tok.encode_batch(batch["text"], add_special_tokens=False)
            return {"input_ids": [e.ids for e in encs],
                    "word_starts": [word_starts(e.word_ids, e.offsets, t, opts.cjk_segmenter).tolist()
                                    for e, t in zip(encs, batch["text"])],
                    "validation": [_is_validation(t, opts.validation_fraction, opts.seed) for t in batch["text"]]}

        enc = ds.map(encode, batched=True, batch_size=256, num_proc=opts.num_proc if opts.num_proc > 1 else None,
                     remove_columns=["text"], desc="tokenizing")
        is_val = np.asarray(enc["validation"], dtype=bool)
        if opts.validation_fraction > 0 and not is_val.any() and len(enc) > 1:
            is_val[-1] = True  # a tiny corpus still gets a held-out document
        splits = {"train": np.flatnonzero(~is_val), "validation": np.flatnonzero(is_val)}
        if len(splits["train"]) == 0:
            raise DataError(f"corpus {opts.source} has no training documents after the split")
        manifest_splits, counts = {}, {}
        for name, rows in splits.items():
            sub = enc.select(rows)
            entries = write_shards(tmp / name, sub.iter(batch_size=1000), info.vocab_size, opts.shard_tokens)
            manifest_splits[name] = entries
            counts[name] = {"documents": sum(e["documents"] for e in entries),
                            "tokens": sum(e["tokens"] for e in entries)}
        if counts["train"]["tokens"] == 0:
            raise DataError(f"corpus {opts.source} produced no tokens")
        manifest = {
            "format": FORMAT,
            "source": opts.source,
            "tokenizer": info.to_dict(),
            "tokenizer_file_sha256": file_sha256(tmp / "tokenizer" / TOKENIZER_FILE),
            "word_starts": True,
            "cjk_segmenter": opts.cjk_segmenter,
            "counts": counts,
            "invalid_utf8_lines_skipped": stats.invalid_utf8_lines,
            "splits": manifest_splits,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log.info("prep done in %.1fs: %d train / %d validation documents, %d / %d tokens -> %s",
             time.time() - t0, counts["train"]["documents"], counts["validation"]["documents"],
             counts["train"]["tokens"], counts["validation"]["tokens"], out)
    return out


def _texts(ds):
    for batch in ds.iter(batch_size=1000):
        yield from batch["text"]
