"""Batch encoding: documents -> token ids, word-start bits and lengths as flat numpy arrays.

One `encode_batch` call per batch; ids and word ids are pulled out of the encodings in one
C-level pass each and the word starts are computed over the whole batch in numpy, so the
per-token cost is the tokenizer's own (no per-token Python).
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from tokenizers import Tokenizer

from masklab.data_prep.words import _is_cjk, word_starts


@dataclass
class EncodedBatch:
    ids: np.ndarray  # uint32 [n_tokens], documents concatenated, no specials
    starts: np.ndarray  # uint8 [n_tokens], 1 where a word starts
    lengths: np.ndarray  # int64 [n_docs], tokens per document (0 for a document with none)
    validation: np.ndarray  # bool [n_docs], the document belongs to the validation split


def is_validation(texts: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """bool [n_docs]: a content hash, not row order, decides, so the split is stable when the
    corpus is re-read, re-ordered or split differently among processes."""
    if fraction <= 0:
        return np.zeros(len(texts), dtype=bool)
    key = str(seed).encode()
    h = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=key).digest(), "little")
                     for t in texts), dtype=np.uint64, count=len(texts))
    return h < np.uint64(int(fraction * 2**64) if fraction < 1 else 2**64 - 1)


def encode_documents(tok: Tokenizer, texts: list[str], fraction: float, seed: int,
                     cjk_segmenter: Optional[str] = None) -> EncodedBatch:
    encs = tok.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
    n = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.uint32, count=n)
    # word ids restart at 0 in every document; None (added tokens) becomes NaN, which never equals its neighbour
    w = np.array(list(itertools.chain.from_iterable(e.word_ids for e in encs)), dtype=np.float64)
    starts = np.ones(n, dtype=np.uint8)
    if n:
        starts[1:] = w[1:] != w[:-1]
        first = np.cumsum(lengths) - lengths
        starts[first[lengths > 0]] = 1
    if cjk_segmenter:
        first = np.cumsum(lengths) - lengths
        for i, (e, t) in enumerate(zip(encs, texts)):
            if lengths[i] and any(_is_cjk(c) for c in t):
                a = first[i]
                starts[a:a + lengths[i]] = word_starts(e.word_ids, e.offsets, t, cjk_segmenter)
    return EncodedBatch(ids, starts, lengths, is_validation(texts, fraction, seed))
