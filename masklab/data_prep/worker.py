"""One unit of the plan -> its train/validation shards and a unit record, written last.

A unit's shards are named after the unit (`shard_<unit>_<k>`), so units can be written by any
process in any order and the merged manifest lists them in corpus order. A unit killed half
way leaves no record; its stray shard directories are removed when it is redone.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from masklab.data_prep.encode import encode_documents
from masklab.data_prep.plan import UNITS_DIR, corpus_digest, units_of
from masklab.data_prep.shard_writer import ShardWriter
from masklab.data_prep.sources import MAX_DOCUMENT_BYTES, ReadStats, unit_documents
from masklab.data_prep.tokenizer import TOKENIZER_FILE, file_sha256, is_rust_panic, load_tokenizer, panic_error

log = logging.getLogger("masklab.data_prep")
BATCH_DOCS = 512
SPLITS = ("train", "validation")

Progress = Callable[[int, int], None]  # (bytes read, tokens written) since the last call


def unit_record(work: Path, index: int) -> Path:
    return work / UNITS_DIR / f"u_{index:06d}.json"


def encode_unit(work: Path, plan: dict, index: int, progress: Optional[Progress] = None,
                max_documents: Optional[int] = None) -> dict:
    """-> the unit record {unit, splits: {train: [entries], validation: [...]}, documents, bytes,
    invalid_utf8_lines}; a unit already finished is read back, not redone."""
    rec_path = unit_record(work, index)
    if rec_path.is_file():
        return json.loads(rec_path.read_text())
    opts = plan["options"]
    unit = units_of(plan)[index]
    prefix = f"shard_{index:05d}"
    for split in SPLITS:
        for stale in (work / split).glob(f"{prefix}_*"):
            shutil.rmtree(stale)
    tok_sha = file_sha256(work / "tokenizer" / TOKENIZER_FILE)  # before loading: the file we encode with
    tok, info = load_tokenizer(work / "tokenizer")
    writers = {s: ShardWriter(work / s, prefix, info.vocab_size, opts["shard_tokens"]) for s in SPLITS}
    stats = ReadStats()
    batch: list[str] = []
    seen_bytes, t0, last_log = 0, time.time(), time.time()

    def flush():
        nonlocal seen_bytes
        try:
            enc = encode_documents(tok, batch, opts["validation_fraction"], opts["seed"], opts["cjk_segmenter"])
        except BaseException as e:  # noqa: B036 (a Rust panic is a BaseException)
            if not is_rust_panic(e):
                raise
            raise panic_error(e, plan.get("tokenizer_source", str(work / "tokenizer")),
                              f"encoding {unit[0].path}") from None
        val = enc.validation
        tok_val = np.repeat(val, enc.lengths)  # per document -> per token
        writers["train"].add(enc.ids[~tok_val], enc.starts[~tok_val], enc.lengths[~val])
        writers["validation"].add(enc.ids[tok_val], enc.starts[tok_val], enc.lengths[val])
        if progress:
            progress(stats.bytes - seen_bytes, len(enc.ids))
        seen_bytes = stats.bytes
        batch.clear()

    for doc in unit_documents(unit, opts["text_column"], stats, opts.get("max_document_bytes", MAX_DOCUMENT_BYTES)):
        batch.append(doc)
        if max_documents is not None and stats.documents >= max_documents:
            break
        if len(batch) >= BATCH_DOCS:
            flush()
            if progress is None and time.time() - last_log > 30:
                last_log = time.time()
                log.info("unit %d: %.1f MB read, %.1f MB/s", index, stats.bytes / 1e6,
                         stats.bytes / 1e6 / max(time.time() - t0, 1e-9))
    if batch:
        flush()
    rec = {"unit": index, "splits": {s: w.close() for s, w in writers.items()}, "documents": stats.documents,
           "bytes": stats.bytes, "invalid_utf8_lines": stats.invalid_utf8_lines,
           "overlong_documents": stats.overlong_documents,
           # what these shards were encoded with: the merge refuses a unit made under another plan
           "tokenizer_sha256": tok_sha, "corpus_fingerprint": corpus_digest(plan)}
    tmp = rec_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    tmp.rename(rec_path)  # the record is written last: it marks the unit done
    if progress is None:
        log.info("unit %d done: %d documents, %.1f MB in %.1fs", index, stats.documents, stats.bytes / 1e6,
                 time.time() - t0)
    return rec

