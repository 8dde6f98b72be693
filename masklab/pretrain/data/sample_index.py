"""The sample index of one data set and seq_len: built once, memory-mapped, shared by every process.

Files under `<data>/index/<split>-L<seq_len>-<content digest[:16]>/` (or ~/.cache/masklab/index/
when the data directory is read-only), each written under a temp name and renamed, so the first
process that needs one builds it and the others (ranks, DataLoader workers, later runs) map it:
- chunks.npy: (shard int32, length int32, start int64) [N]: document chunks of at most
  seq_len - 2 tokens (specials excluded), in corpus order (16 bytes per sample);
- pack_offsets.npy int64 [P+1] + pack_rows.npy int64 [N] (`data.packing=docs`): chunk rows in a
  fixed shuffled order (a Feistel permutation keyed by PACK_KEY), cut greedily into packs of at
  most seq_len tokens with their [CLS]/[SEP]: pack p holds rows pack_rows[off[p]:off[p+1]];
- doc_stream.npy int64 [D+1] (`data.packing=concat`): offset of every document in the corpus
  stream "doc [SEP] doc [SEP] ..." (all shards in order).
Build time is linear in the corpus; a build holds one shard's doc_offsets (or, for packs, the
cumulative lengths int64 [N+1]) in memory; use holds nothing but the mappings.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from masklab.data_prep.content import check_offsets
from masklab.data_prep.shards import ShardSet
from masklab.pretrain.data.permutation import FeistelPermutation

INDEX_VERSION = 1
PACK_KEY = 0x5EED_BACC
CHUNK_DTYPE = np.dtype([("shard", "<i4"), ("length", "<i4"), ("start", "<i8")])
_BLOCK = 1 << 20


def index_dir(shards: ShardSet, seq_len: int) -> Path:
    name = f"{shards.split}-L{seq_len}-v{INDEX_VERSION}-{shards.content_digest[:16]}"
    local = shards.root / "index"
    if os.access(shards.root, os.W_OK) and (not local.exists() or os.access(local, os.W_OK)):
        return local / name
    key = hashlib.sha256(str(shards.root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "masklab" / "index" / key / name


def _mapped(path: Path, build: Callable[[Path], None]) -> np.ndarray:
    """Map `path`, building it first (into a temp file, then renamed) if it does not exist yet."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def _chunk_counts(offs: np.ndarray, body: int) -> np.ndarray:
    return (np.diff(offs) + body - 1) // body


def build_chunks(shards: ShardSet, seq_len: int, out: Path) -> None:
    body = seq_len - 2
    for i, s in enumerate(shards.shards):  # read here anyway: broken offsets are one line, not an IndexError
        check_offsets(s.doc_offsets, len(s.tokens), f"{shards.root}/{shards.split} shard {i}")
    n = sum(int(_chunk_counts(np.asarray(s.doc_offsets), body).sum()) for s in shards.shards)
    table = np.lib.format.open_memmap(out, mode="w+", dtype=CHUNK_DTYPE, shape=(n,))
    at = 0
    for i, s in enumerate(shards.shards):
        offs = np.asarray(s.doc_offsets, dtype=np.int64)
        n_chunks = _chunk_counts(offs, body)
        doc = np.repeat(np.arange(len(n_chunks)), n_chunks)
        k = np.arange(len(doc)) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)  # chunk number in its doc
        start = offs[doc] + k * body
        rows = slice(at, at + len(doc))
        table["shard"][rows], table["start"][rows] = i, start
        table["length"][rows] = np.minimum(body, offs[doc + 1] - start)
        at += len(doc)
    table.flush()


def greedy_bins(cum: np.ndarray, cap: int) -> np.ndarray:
    """Next-fit packing of consecutive items into bins of at most `cap` (every item <= cap).
    cum int64 [n+1] cumulative item sizes -> bin offsets int64 [P+1] (0 ... n)."""
    n = len(cum) - 1
    starts, s = [0], 0
    while s < n:  # vectorised "farthest fit" for a block of starts, then a cheap walk along the chain
        stop = min(n, s + _BLOCK)
        nxt = (np.searchsorted(cum, cum[s:stop] + cap, side="right") - 1).tolist()
        base = s
        while s < stop:
            s = nxt[s - base]
            starts.append(s)
    return np.asarray(starts, dtype=np.int64)


def build_packs(chunks: np.ndarray, seq_len: int, rows_out: Path, offsets_out: Path) -> None:
    n = len(chunks)
    perm = FeistelPermutation(n, PACK_KEY, 0)
    rows = np.lib.format.open_memmap(rows_out, mode="w+", dtype=np.int64, shape=(n,))
    cum = np.zeros(n + 1, dtype=np.int64)
    for a in range(0, n, _BLOCK):
        r = perm(np.arange(a, min(n, a + _BLOCK)))
        rows[a:a + len(r)] = r
        cum[a + 1:a + 1 + len(r)] = chunks["length"][r] + 2
    rows.flush()
    np.cumsum(cum, out=cum)
    np.save(offsets_out, greedy_bins(cum, seq_len))


def build_doc_stream(shards: ShardSet, out: Path) -> None:
    for i, s in enumerate(shards.shards):
        check_offsets(s.doc_offsets, len(s.tokens), f"{shards.root}/{shards.split} shard {i}")
    n_docs = sum(len(s.doc_offsets) - 1 for s in shards.shards)
    stream = np.lib.format.open_memmap(out, mode="w+", dtype=np.int64, shape=(n_docs + 1,))
    stream[0], at, total = 0, 0, 0
    for s in shards.shards:
        lens = np.diff(np.asarray(s.doc_offsets, dtype=np.int64)) + 1  # each document is followed by [SEP]
        stream[at + 1:at + 1 + len(lens)] = total + np.cumsum(lens)
        at, total = at + len(lens), total + int(lens.sum())
    stream.flush()


def open_chunks(shards: ShardSet, seq_len: int) -> np.recarray:
    """-> the chunk table, memory-mapped: fields .shard, .length, .start [N]."""
    return _mapped(index_dir(shards, seq_len) / "chunks.npy", lambda p: build_chunks(shards, seq_len, p)).view(np.recarray)


def open_packs(shards: ShardSet, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (pack offsets int64 [P+1], chunk rows int64 [N]), both memory-mapped."""
    d = index_dir(shards, seq_len)
    chunks = open_chunks(shards, seq_len)
    if not (d / "pack_offsets.npy").is_file():
        tmp = [d / f".{name}.build-{os.getpid()}.npy" for name in ("pack_rows", "pack_offsets")]
        try:  # rows first, offsets last: offsets present means both are complete
            build_packs(chunks, seq_len, *tmp)
            os.replace(tmp[0], d / "pack_rows.npy")
            os.replace(tmp[1], d / "pack_offsets.npy")
        finally:
            for t in tmp:
                t.unlink(missing_ok=True)
    return np.load(d / "pack_offsets.npy", mmap_mode="r"), np.load(d / "pack_rows.npy", mmap_mode="r")


def open_doc_stream(shards: ShardSet, seq_len: int) -> np.ndarray:
    return _mapped(index_dir(shards, seq_len) / "doc_stream.npy", lambda p: build_doc_stream(shards, p))
