"""Packed, memory-mapped token shards with a manifest: the verified reader (writer: shard_writer.py).

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

import numpy as np

from masklab.data_prep.content import check_offset_ends
from masklab.data_prep.tokenizer import TokenizerInfo
from masklab.data_prep.verify import SHARD_FILES, content_digest, verify_split, verify_tokenizer
from masklab.errors import DataError

FORMAT = "masklab-shards-v1"


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32


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
            check_offset_ends(self.shards[-1].doc_offsets, len(self.shards[-1].tokens), str(d))  # O(1)

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
    partial = Path(root).parent / f".{Path(root).name}.partial"
    if not f.is_file() and partial.is_dir():
        raise DataError(f"{root} is not ready: its prep has not finished (work in {partial}); "
                        "rerun the same `masklab prep` to complete it")
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
