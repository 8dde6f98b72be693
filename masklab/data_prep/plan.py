"""The prep plan: units, options and tokenizer, fixed once in the work directory.

`<parent>/.<name>.partial/` holds plan.json, tokenizer/, the units' shards (train/, validation/)
and one `units/u_<i>.json` per finished unit. Every task (process, datatrove task, Slurm array
element) reads the plan and encodes its units; a rerun with the same corpus and options keeps
the finished units and the tokenizer, so only missing work is redone and the result equals an
uninterrupted run. A different corpus or other options start the work directory afresh.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from masklab.data_prep.sources import (MAX_DOCUMENT_BYTES, Piece, ReadStats, documents, fingerprint, group_pieces,
                                      plan_pieces)
from masklab.data_prep.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from masklab.errors import DataError

log = logging.getLogger("masklab.data_prep")
PLAN_FILE = "plan.json"
UNITS_DIR = "units"


@dataclass
class PlanOptions:
    """The options that decide the output bytes (the parallel settings do not)."""
    source: str
    text_column: str
    tokenizer: Optional[str]
    tokenizer_kind: str
    vocab_size: int
    lowercase: bool
    validation_fraction: float
    cjk_segmenter: Optional[str]
    shard_tokens: int
    chunk_bytes: int
    tokenizer_sample_bytes: int
    seed: int
    max_documents: Optional[int]
    max_document_bytes: int = MAX_DOCUMENT_BYTES  # longer documents are skipped and counted

    def __post_init__(self):  # paths given as Path objects (the Python API): the plan is JSON
        self.source = str(self.source)
        self.tokenizer = None if self.tokenizer is None else str(self.tokenizer)


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def corpus_digest(plan: dict) -> str:
    """sha256 of what identifies the corpus and the options: the plan's fingerprint (path, size,
    mtime of every file), source and output-deciding options. Bound to every shard (merge.py)."""
    key = {"source": plan["options"]["source"], "fingerprint": plan["fingerprint"], "options": plan["options"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def load_plan(work: Path) -> dict:
    return json.loads((work / PLAN_FILE).read_text())


def make_plan(opts: PlanOptions, work: Path) -> dict:
    """-> the plan in `work` (reused when it matches this corpus and these options)."""
    pieces = plan_pieces(opts.source, opts.chunk_bytes)
    units = group_pieces(pieces, opts.chunk_bytes)
    plan = {"options": asdict(opts), "fingerprint": fingerprint(pieces),
            "units": [[p.to_dict() for p in unit] for unit in units]}
    if (work / PLAN_FILE).is_file():
        try:
            old = load_plan(work)
        except (OSError, json.JSONDecodeError):
            old = None
        if old and {k: old.get(k) for k in plan} == plan and (work / "tokenizer" / "tokenizer.json").is_file():
            done = len(list((work / UNITS_DIR).glob("u_*.json")))
            log.info("resuming the unfinished prep in %s (%d of %d units done)", work, done, len(units))
            return old
        log.info("removing the unfinished prep in %s (another corpus or other options)", work)
    shutil.rmtree(work, ignore_errors=True)
    (work / UNITS_DIR).mkdir(parents=True)
    if opts.tokenizer:
        tok, _ = load_tokenizer(opts.tokenizer)
        plan["tokenizer_source"] = str(Path(opts.tokenizer).resolve())
    else:
        log.info("training a %s tokenizer (vocab %d) on a sample of at most %d bytes",
                 opts.tokenizer_kind, opts.vocab_size, opts.tokenizer_sample_bytes)
        stats = ReadStats()
        tok = train_tokenizer(sample_documents(pieces, opts.text_column, opts.tokenizer_sample_bytes, stats,
                                               opts.max_document_bytes),
                              vocab_size=opts.vocab_size, kind=opts.tokenizer_kind, lowercase=opts.lowercase)
        if stats.documents == 0:
            raise DataError(f"corpus {opts.source} is empty: no non-blank text found")
        plan["tokenizer_source"] = f"trained: {opts.tokenizer_kind}, vocab {opts.vocab_size}, sample {stats.bytes} bytes"
    save_tokenizer(tok, work / "tokenizer")
    tmp = work / (PLAN_FILE + ".tmp")
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.rename(work / PLAN_FILE)  # the plan is the last thing written: a half plan is never reused
    return plan


def sample_documents(pieces: list[Piece], text_column: str, budget: int, stats: ReadStats,
                     max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[str]:
    """A deterministic sample of about `budget` bytes spread over all pieces: each piece gives
    the head of its documents in proportion to its size (all of it when the corpus is smaller)."""
    sizes = [max(u.size, 1) for u in pieces]
    total = sum(sizes)
    for u, size in zip(pieces, sizes):
        share = budget if u.kind in ("pydoc", "hub") else budget * size // total
        if share <= 0:
            continue
        start = stats.bytes
        for doc in documents(u, text_column, stats, max_bytes):
            yield doc
            if stats.bytes - start >= share:
                break


def units_of(plan: dict) -> list[list[Piece]]:
    """-> the plan's work units, each a list of pieces."""
    return [[Piece(**p) for p in unit] for unit in plan["units"]]


def plan_bytes(plan: dict) -> int:
    return sum(p["size"] for unit in plan["units"] for p in unit)
