"""Shard writer: flat token / word-start arrays in, `.npy` shards out, sha256 taken while writing.

Each shard is held in memory only up to `shard_tokens` tokens (3 bytes a token plus one
int64 per document) and written part by part, never concatenated, so memory does not grow
with the corpus and a flush does not double it. The files are written
through a hashing wrapper: the manifest's checksums never need a second read of the shards.
Layout and dtypes: see `data_prep/shards.py`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from masklab.data_prep.shards import token_dtype


class _HashingFile:
    """A write-only file object that hashes what passes through it (np.save writes into it)."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self._f.write(b)

    def close(self) -> str:
        self._f.flush()
        self._f.close()
        return self.sha.hexdigest()


def save_hashed(path: Path, parts: list[np.ndarray], dtype) -> str:
    """np.save(path, np.concatenate(parts).astype(dtype)) without building the concatenation
    (a shard's buffered parts are written one by one: no second copy of the shard in memory)
    -> hex sha256 of the file written. parts: 1-d arrays (of `dtype`: no conversion copy)."""
    dtype = np.dtype(dtype)
    f = _HashingFile(path)
    try:
        # the header np.save writes (format 1.0, sorted keys): the bytes equal np.save's
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": (sum(len(p) for p in parts),)})
        for p in parts:
            f.write(np.ascontiguousarray(p.ravel(), dtype=dtype).data.cast("B"))
    finally:
        digest = f.close()
    return digest


class ShardWriter:
    """Appends documents to `split_dir/<prefix>_<k>` shards (renamed `shard_<n>` by the merge);
    `close()` -> manifest entries
    [{name, documents, tokens, sha256: {file: hex}}]. Empty documents are dropped."""

    def __init__(self, split_dir: Path, prefix: str, vocab_size: int, shard_tokens: int):
        self.dir, self.prefix, self.limit = split_dir, prefix, shard_tokens
        self.dtype = token_dtype(vocab_size)
        self.entries: list[dict] = []
        self._toks: list[np.ndarray] = []
        self._bits: list[np.ndarray] = []
        self._lens: list[np.ndarray] = []
        self._n = 0

    def add(self, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """ids: uint32 [n], starts: uint8 [n], lengths: int64 [docs] with sum == n."""
        keep = lengths > 0
        lengths = lengths[keep]
        if not len(lengths):
            return
        self._toks.append(ids.astype(self.dtype, copy=False))
        self._bits.append(starts)
        self._lens.append(lengths)
        self._n += len(ids)
        if self._n >= self.limit:
            self._flush()

    def _flush(self) -> None:
        if not self._lens:
            return
        d = self.dir / f"{self.prefix}_{len(self.entries):03d}"
        d.mkdir(parents=True)
        lens = np.concatenate(self._lens)
        sha = {"tokens.npy": save_hashed(d / "tokens.npy", self._toks, self.dtype),
               "word_starts.npy": save_hashed(d / "word_starts.npy", self._bits, np.uint8),
               "doc_offsets.npy": save_hashed(d / "doc_offsets.npy",
                                              [np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)], np.int64)}
        self.entries.append({"name": d.name, "documents": int(len(lens)), "tokens": int(lens.sum()), "sha256": sha})
        self._toks, self._bits, self._lens, self._n = [], [], [], 0

    def close(self) -> list[dict]:
        self._flush()
        return self.entries
