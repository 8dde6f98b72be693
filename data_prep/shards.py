"""Packed, memory-mapped token shards with a manifest; writer and verified reader.

Layout of a prepared data directory (written under a temp name, renamed when complete):
    tokenizer/tokenizer.json, tokenizer/tokenizer_info.json
    train/shard_00000/{tokens.npy, word_starts.npy, doc_offsets.npy}
    validation/shard_00000/...
    manifest.json   (format, tokenizer sha256 + ids, counts, sha256 of every shard file)
tokens: uint16 (vocab <= 65535) or uint32 [n_tokens], documents concatenated, no specials;
word_starts: uint8 [n_tokens]; doc_offsets: int64 [n_docs + 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from masklab.data_prep.tokenizer import TokenizerInfo, file_sha256
from masklab.data_prep.verify import SHARD_FILES, content_digest, verify_split, verify_tokenizer
from masklab.errors import DataError

FORMAT = "masklab-shards-v1"


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32


def write_shards(split_dir: Path, batches: Iterator[dict], vocab_size: int,
                 shard_tokens: int = 50_000_000) -> list[dict]:
    """Write shards from batches of {"input_ids": [[...]], "word_starts": [[...]]}.
    -> manifest entries [{name, documents, tokens, sha256: {file: hex}}]."""
    dtype = token_dtype(vocab_size)
    entries: list[dict] = []
    toks: list[np.ndarray] = []
    bits: list[np.ndarray] = []
    lens: list[int] = []

    def flush():
        if not lens:
            return
        d = split_dir / f"shard_{len(entries):05d}"
        d.mkdir(parents=True)
        np.save(d / "tokens.npy", np.concatenate(toks).astype(dtype))
        np.save(d / "word_starts.npy", np.concatenate(bits).astype(np.uint8))
        np.save(d / "doc_offsets.npy", np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
        entries.append({"name": d.name, "documents": len(lens), "tokens": int(sum(lens)),
                        "sha256": {f: file_sha256(d / f) for f in SHARD_FILES}})
        toks.clear(), bits.clear(), lens.clear()

    n = 0
    for batch in batches:
        for ids, ws in zip(batch["input_ids"], batch["word_starts"]):
            if len(ids) == 0:
                continue
            toks.append(np.asarray(ids, dtype=np.int64))
            bits.append(np.asarray(ws, dtype=np.uint8))
            lens.append(len(ids))
            n += len(ids)
            if n >= shard_tokens:
                flush()
                n = 0
    flush()
    return entries


@dataclass
class Shard:
    tokens: np.ndarray  # memory-mapped [n_tokens]
    word_starts: np.ndarray  # memory-mapped uint8 [n_tokens]
    doc_offsets: np.ndarray  # memory-mapped int64 [n_docs + 1]


class ShardSet:
    """All shards of one split, opened memory-mapped (doc_offsets too: nothing grows with the corpus).

    verify: "quick" (default: headers, sizes, mtimes and sampled blocks against the last full
    verification, see data_prep/verify.py; a full hash only for files never verified or changed),
    "full" (sha256 of every file, as `masklab verify` does) or "none". The tokenizer beside the
    shards is always checked against the manifest's tokenizer_file_sha256."""

    def __init__(self, root: str | Path, split: str = "train", verify: str = "quick"):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if split not in self.manifest["splits"]:
            raise DataError(f"{self.root}: no split '{split}' (have {', '.join(self.manifest['splits'])})")
        if verify not in ("quick", "full", "none"):
            raise ValueError(f"verify={verify!r} is not one of quick, full, none")
        self.split = split
        self.content_digest = content_digest(self.manifest)
        verify_tokenizer(self.root, self.manifest)
        if verify != "none":
            verify_split(self.root, self.manifest, split, full=verify == "full")
        self.tokenizer = TokenizerInfo(**{**self.manifest["tokenizer"],
                                          "special_ids": tuple(self.manifest["tokenizer"]["special_ids"])})
        self.has_word_starts = bool(self.manifest.get("word_starts", True))
        self.shards: list[Shard] = []
        for entry in self.manifest["splits"][split]:
            d = self.root / split / entry["name"]
            for f in SHARD_FILES:
                if not (d / f).is_file():
                    raise DataError(f"shard file missing: {d / f}")
            try:
                self.shards.append(Shard(*(np.load(d / f, mmap_mode="r") for f in SHARD_FILES)))
            except ValueError as e:
                raise DataError(f"cannot read shard {d}: {e}") from None

    def __reduce__(self):
        # a spawned DataLoader worker reopens the maps (pickling a memmap would copy the whole shard)
        return ShardSet, (self.root, self.split, "none")

    @property
    def num_documents(self) -> int:
        return sum(len(s.doc_offsets) - 1 for s in self.shards)

    @property
    def num_tokens(self) -> int:
        return sum(int(s.doc_offsets[-1]) for s in self.shards)


def read_manifest(root: Path) -> dict:
    f = Path(root) / "manifest.json"
    if not Path(root).is_dir():
        raise DataError(f"shard directory not found: {root} (run `masklab prep` first)")
    if not f.is_file():
        raise DataError(f"{root} has no manifest.json: not a prepared data directory (run `masklab prep`)")
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"corrupt manifest {f}: {e}") from None
    if m.get("format") != FORMAT:
        raise DataError(f"{f}: format '{m.get('format')}' is not {FORMAT}")
    return m
