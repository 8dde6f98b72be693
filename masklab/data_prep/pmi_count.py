"""Streaming word n-gram counts of the training shards, in memory (numpy).

Words are the word-start-delimited token runs stored in the shards (a document start is always
a word start); an n-gram never crosses a document. Each chunk of whole documents is reduced with
np.unique to (hash, count, first global word position) triples, merged now and then: ~24 bytes
per distinct n-gram. Fine for small and medium corpora; data_prep.pmi_duckdb counts out of core
with the same chunks and hashes and gives the same result.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from masklab.data_prep.ngram_hash import ngram_hashes, word_hashes
from masklab.data_prep.shards import ShardSet

MAX_N = 5


def chunks(shards: ShardSet, chunk_tokens: int):
    """Whole-document chunks of all shards -> (tokens int64 [t], first token of each word int64 [w]
    (document starts forced), document of each word int64 [w], global index of the first word)."""
    gbase = 0
    for sh in shards.shards:
        offs = np.asarray(sh.doc_offsets, dtype=np.int64)
        d = 0
        while d < len(offs) - 1:
            e = max(d + 1, int(np.searchsorted(offs, offs[d] + chunk_tokens, side="right")) - 1)
            a, b = int(offs[d]), int(offs[e])
            toks = np.asarray(sh.tokens[a:b], dtype=np.int64)
            ws = np.asarray(sh.word_starts[a:b]).astype(bool)
            ws[offs[d:e] - a] = True  # a word never continues across documents
            first = np.flatnonzero(ws)
            doc = np.searchsorted(offs[d:e + 1] - a, first, side="right") - 1
            yield toks, first, doc, gbase
            gbase += len(first)
            d = e


def chunk_ngrams(toks, first, doc, gbase, token_hash, max_n: int):
    """One chunk -> (words in it, {n: (unique hashes uint64 [K], counts int64 [K], first global word
    position int64 [K])}) for the n-grams inside one document."""
    length = np.diff(np.append(first, len(toks)))
    wh = word_hashes(toks, np.ones(len(toks), bool), first, length, token_hash)
    W = len(wh)
    out = {}
    for n in range(1, min(max_n, W) + 1):
        h = ngram_hashes(wh, n)
        i = np.flatnonzero(doc[:W - n + 1] == doc[n - 1:])  # inside one document
        u, idx, cnt = np.unique(h[i], return_index=True, return_counts=True)
        out[n] = (u, cnt.astype(np.int64), gbase + i[idx])
    return W, out


def reduce_triples(parts: list) -> tuple:
    """Merge [(hash uint64, count int64, pos int64)] -> one triple, unique hashes (sorted), summed
    counts, smallest (first) position."""
    h = np.concatenate([p[0] for p in parts])
    c = np.concatenate([p[1] for p in parts])
    pos = np.concatenate([p[2] for p in parts])
    order = np.lexsort((pos, h))
    h, c, pos = h[order], c[order], pos[order]
    head = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    return h[head], np.add.reduceat(c, head), pos[head]


def count_ngrams(shards: ShardSet, token_hash: np.ndarray, min_count: int, max_n: int = MAX_N,
                 chunk_tokens: int = 4_000_000, progress: bool = True):
    """-> ({n: (hashes uint64 [K] sorted, counts int64 [K], first global word position int64 [K])}
    keeping n-grams seen >= min_count times, total words, {n: distinct n-grams before pruning})."""
    pending = {n: [] for n in range(1, max_n + 1)}
    total = 0
    bar = tqdm(total=shards.num_tokens, desc="pmi counts", unit="tok", disable=not progress)
    for toks, first, doc, gbase in chunks(shards, chunk_tokens):
        W, grams = chunk_ngrams(toks, first, doc, gbase, token_hash, max_n)
        total += W
        for n, triple in grams.items():
            pending[n].append(triple)
            if sum(len(p[0]) for p in pending[n]) > 8_000_000:  # bound the memory of unmerged chunks
                pending[n] = [reduce_triples(pending[n])]
        bar.update(len(toks))
    bar.close()
    counts, distinct = {}, {}
    for n, parts in pending.items():
        if parts:
            h, c, p = reduce_triples(parts)
            distinct[n] = len(h)
            keep = c >= min_count
            counts[n] = (h[keep], c[keep], p[keep])
    return counts, total, distinct


def word_hash_at(shards: ShardSet, token_hash: np.ndarray, positions: np.ndarray, span: int,
                 chunk_tokens: int, want_tokens: bool = False):
    """Word hashes of the `span` words at each global word position [K] -> uint64 [K, span]; with
    want_tokens also the words' token ids (list of K lists of span token lists)."""
    K = len(positions)
    out = np.zeros((K, span), dtype=np.uint64)
    toks_out = [None] * K if want_tokens else None
    order = np.argsort(positions)
    sp = positions[order]
    for toks, first, doc, gbase in chunks(shards, chunk_tokens):
        W = len(first)
        lo, hi = np.searchsorted(sp, [gbase, gbase + W])
        if hi == lo:
            continue
        length = np.diff(np.append(first, len(toks)))
        wh = word_hashes(toks, np.ones(len(toks), bool), first, length, token_hash)
        local = sp[lo:hi] - gbase
        out[order[lo:hi]] = wh[np.minimum(local[:, None] + np.arange(span), W - 1)]
        if want_tokens:  # only for the kept n-grams: a short Python loop
            for k, l0 in zip(order[lo:hi], local):
                toks_out[k] = [toks[first[w]:first[w] + length[w]].tolist() for w in range(l0, l0 + span)]
    return (out, toks_out) if want_tokens else out
