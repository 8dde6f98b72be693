"""`data.packing`: what one unit of the sample order is, and its tokens.

A unit is what the permutation shuffles and what `data.batch_size` counts:
- none:   one document chunk of <= seq_len - 2 tokens, as [CLS] chunk [SEP] (one sequence);
- docs:   a pack of consecutive chunks of a fixed shuffled order (sample_index.py), <= seq_len
          tokens in all; every chunk keeps its own [CLS] ... [SEP], its own `cu_seqlens` entry and
          positions from 0, so attention never crosses documents (ModernBERT-style packing);
- concat: RoBERTa's FULL-SENTENCES: the corpus stream "doc [SEP] doc [SEP] ..." cut into windows
          of seq_len - 1 tokens, each one sequence [CLS] window (attention across documents;
          the last window of an epoch may be shorter), as fairseq's TokenBlockDataset + shuffle.
`gather` returns the flat arrays the masker takes; `seq_ids` keep masks counter-based: a unit's
sequences get ids from its global counter (none/concat: the counter; docs: counter * seq_len + j).
Layouts hold only memory maps; pickling (spawned DataLoader workers) reopens them.
"""
from __future__ import annotations

import numpy as np

from masklab.data_prep.shards import ShardSet
from masklab.pretrain.data.sample_index import open_chunks, open_doc_stream, open_packs

PACKING = ("none", "docs", "concat")


class Layout:
    def __init__(self, shards: ShardSet, seq_len: int):
        self.shards, self.seq_len = shards, seq_len
        self.cls, self.sep = shards.tokenizer.cls_id, shards.tokenizer.sep_id
        self._open()

    def __getstate__(self):
        return {"shards": self.shards, "seq_len": self.seq_len, "cls": self.cls, "sep": self.sep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self.num_units

    def _chunk_arrays(self, rows: np.ndarray):
        """Chunk rows int64 [m] -> (tokens int64 [T], bits uint8 [T], lens int64 [m]), each [CLS] chunk [SEP]."""
        cls, sep, one = np.array([self.cls]), np.array([self.sep]), np.ones(1, np.uint8)
        toks, bits = [], []
        c = self.chunks[rows]
        for sh, a, n in zip(c["shard"].tolist(), c["start"].tolist(), c["length"].tolist()):
            s = self.shards.shards[sh]
            toks += [cls, s.tokens[a:a + n], sep]
            bits += [one, s.word_starts[a:a + n], one]
        return np.concatenate(toks).astype(np.int64, copy=False), np.concatenate(bits), c["length"].astype(np.int64) + 2


class ChunkLayout(Layout):
    def _open(self):
        self.chunks = open_chunks(self.shards, self.seq_len)
        self.num_units = len(self.chunks)

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """int64 [m]: tokens of each unit, specials included."""
        return self.chunks["length"][rows].astype(np.int64) + 2

    def gather(self, rows: np.ndarray, ids: np.ndarray):
        """rows int64 [m] units, ids int64 [m] their global counters -> (tokens int64 [T], word starts
        uint8 [T], sequence lengths int64 [S], sequence ids int64 [S])."""
        tokens, bits, lens = self._chunk_arrays(rows)
        return tokens, bits, lens, np.asarray(ids, dtype=np.int64)


class DocsLayout(Layout):
    def _open(self):
        self.chunks = open_chunks(self.shards, self.seq_len)
        self.offsets, self.rows = open_packs(self.shards, self.seq_len)
        self.num_units = len(self.offsets) - 1

    def members(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pack rows int64 [m] -> (chunk rows int64 [S], pack of each: index into `rows`, int64 [S])."""
        a, b = self.offsets[rows], self.offsets[np.asarray(rows) + 1]
        n = (b - a).astype(np.int64)
        which = np.repeat(np.arange(len(n)), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return np.asarray(self.rows[a[which] + k], dtype=np.int64), which

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        chunk_rows, which = self.members(rows)
        return np.bincount(which, self.chunks["length"][chunk_rows] + 2.0, minlength=len(rows)).astype(np.int64)

    def gather(self, rows: np.ndarray, ids: np.ndarray):
        chunk_rows, which = self.members(rows)
        tokens, bits, lens = self._chunk_arrays(chunk_rows)
        j = np.arange(len(which)) - np.searchsorted(which, which)  # position of the chunk in its pack
        return tokens, bits, lens, np.asarray(ids, dtype=np.int64)[which] * self.seq_len + j


class ConcatLayout(Layout):
    def _open(self):
        self.stream = open_doc_stream(self.shards, self.seq_len)
        self.window = self.seq_len - 1
        self.total = int(self.stream[-1])
        self.num_units = -(-self.total // self.window)
        self.shard_docs = np.cumsum([0] + [len(s.doc_offsets) - 1 for s in self.shards.shards])

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return np.minimum(self.window, self.total - rows * self.window) + 1

    def gather(self, rows: np.ndarray, ids: np.ndarray):
        sep, one = np.array([self.sep]), np.ones(1, np.uint8)
        toks, bits = [], []
        for r in np.asarray(rows, dtype=np.int64).tolist():
            lo, hi = r * self.window, min(self.total, (r + 1) * self.window)
            toks.append(np.array([self.cls])), bits.append(one)
            d = int(np.searchsorted(self.stream, lo, side="right")) - 1
            while lo < hi:  # the documents (each followed by [SEP]) that overlap [lo, hi)
                sh = int(np.searchsorted(self.shard_docs, d, side="right")) - 1
                s = self.shards.shards[sh]
                off, end = int(self.stream[d]), int(self.stream[d + 1])
                base = int(s.doc_offsets[d - self.shard_docs[sh]]) - off
                top = min(hi, end - 1)  # tokens of the document itself; end - 1 is its [SEP]
                if lo < top:
                    toks.append(s.tokens[base + lo:base + top]), bits.append(s.word_starts[base + lo:base + top])
                if hi >= end:
                    toks.append(sep), bits.append(one)
                lo, d = min(hi, end), d + 1
        lens = self.lengths(rows)
        return np.concatenate(toks).astype(np.int64, copy=False), np.concatenate(bits), lens, \
            np.asarray(ids, dtype=np.int64)


def build_layout(shards: ShardSet, seq_len: int, packing: str) -> Layout:
    return {"none": ChunkLayout, "docs": DocsLayout, "concat": ConcatLayout}[packing](shards, seq_len)
