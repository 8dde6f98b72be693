"""PMI n-gram table for PMI masking (Levine et al. 2021, "PMI-Masking"), built from the shards.

Words are the word-start-delimited token runs stored in the shards (a document start is
always a word start). For every word n-gram (n = 2..5) seen at least `min_count` times the
score is PMI with the minimum over segmentations:
    PMI_min(w1..wn) = log p(w1..wn) - max_{segmentations s into >= 2 parts} sum_{part} log p(part)
with p = count / total words. Each length is ranked on its own; the table keeps `size`
n-grams split across lengths (default 50% bigrams, 25% trigrams, 12.5% 4- and 5-grams).

Counting streams over the shards in chunks of whole documents: words and n-grams are
64-bit hashes computed with numpy (`word_hashes`, `ngram_hashes`), each chunk is reduced
with np.unique, and the (hash, count, first position) arrays are merged now and then,
so memory is ~24 bytes per distinct n-gram, never a Python object per occurrence.
The collator matches n-grams with the same hash functions (pretrain.masking.segment).

Output: <out>/pmi_table.json ({n: [[word token ids, ...], ...]} best first, + scores) and
<out>/manifest.json (tokenizer sha256, parameters, counts, build time), written atomically.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from masklab.atomic import atomic_dir
from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError, DataError

DEFAULT_SPLIT = (0.5, 0.25, 0.125, 0.125)
FORMAT = "masklab-pmi-v2"  # v2: {"ngrams", "scores"} file, hashed matching
MAX_N = 5
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GAMMA, _Q, _K = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93), np.uint64(0xA0761D6478BD642F)
_POW = np.cumprod(np.concatenate([[1], np.full(255, _Q, dtype=np.uint64)]).astype(np.uint64), dtype=np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place (uint64)."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _C1
        x ^= x >> np.uint64(27)
        x *= _C2
        x ^= x >> np.uint64(31)
    return x


def token_hash_table(vocab_size: int) -> np.ndarray:
    """uint64 [V]: a fixed random 64-bit value per token id."""
    with np.errstate(over="ignore"):
        return _mix((np.arange(vocab_size, dtype=np.uint64) + np.uint64(1)) * _GAMMA ^ _K)


def word_hashes(tokens: np.ndarray, in_word: np.ndarray, first: np.ndarray, length: np.ndarray,
                token_hash: np.ndarray) -> np.ndarray:
    """Hash of each word (an ordered token run). tokens int [T]; in_word bool [T] (False at tokens
    outside every word); first int64 [W] sorted first token of each word; length int64 [W].
    -> uint64 [W]: mix(sum_j hash(token_j) * Q^j + length * K)."""
    T = len(tokens)
    gaps = np.diff(np.append(first, T))
    j = np.arange(first[0], T) - np.repeat(first, gaps)  # index inside the word (or past its end)
    with np.errstate(over="ignore"):
        v = token_hash[tokens[first[0]:]] * _POW[np.minimum(j, 255)]
        v[~in_word[first[0]:]] = 0
        s = np.add.reduceat(v, first - first[0])
        return _mix(s + length.astype(np.uint64) * _K)


def _combine(cols) -> np.ndarray:
    """mix(sum_k word_hash_k * GAMMA^k + n * Q) over the n columns (uint64 arrays) of an n-gram."""
    n = len(cols)
    with np.errstate(over="ignore"):
        acc = cols[0].copy()
        q = np.uint64(1)
        for k in range(1, n):
            q = q * _GAMMA
            acc += cols[k] * q
        return _mix(acc + np.uint64(n) * _Q)


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """uint64 [W - n + 1]: hash of the n consecutive words starting at each index of wh [W]."""
    m = len(wh) - n + 1
    return _combine([wh[k:m + k] for k in range(n)])


def ngram_hashes_rows(wh_rows: np.ndarray) -> np.ndarray:
    """uint64 [K]: the same hash for each row of word hashes [K, n] (one n-gram per row)."""
    return _combine([wh_rows[:, k] for k in range(wh_rows.shape[1])])


def _segmentations(n: int):
    """All ways to cut n items into >= 2 contiguous parts, as lists of (start, end)."""
    for cuts in range(1, n):
        for pos in itertools.combinations(range(1, n), cuts):
            b = (0,) + pos + (n,)
            yield [(b[i], b[i + 1]) for i in range(len(b) - 1)]


def _chunks(shards: ShardSet, chunk_tokens: int):
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


def _reduce(parts: list) -> tuple:
    """Merge [(hash uint64, count int64, pos int64)] -> one triple, unique hashes (sorted), summed
    counts, smallest (first) position."""
    h = np.concatenate([p[0] for p in parts])
    c = np.concatenate([p[1] for p in parts])
    pos = np.concatenate([p[2] for p in parts])
    order = np.lexsort((pos, h))
    h, c, pos = h[order], c[order], pos[order]
    head = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    return h[head], np.add.reduceat(c, head), pos[head]


def count_ngrams(shards: ShardSet, token_hash: np.ndarray, max_n: int = MAX_N, chunk_tokens: int = 4_000_000,
                 progress: bool = True):
    """Streaming counts. -> ({n: (hashes uint64 [K] sorted, counts int64 [K], first global word
    position int64 [K])}, total words)."""
    pending = {n: [] for n in range(1, max_n + 1)}
    total = 0
    bar = tqdm(total=shards.num_tokens, desc="pmi counts", unit="tok", disable=not progress)
    for toks, first, doc, gbase in _chunks(shards, chunk_tokens):
        length = np.diff(np.append(first, len(toks)))
        wh = word_hashes(toks, np.ones(len(toks), bool), first, length, token_hash)
        W = len(wh)
        total += W
        for n in range(1, max_n + 1):
            if W < n:
                break
            h = ngram_hashes(wh, n)
            i = np.flatnonzero(doc[:W - n + 1] == doc[n - 1:])  # inside one document
            u, idx, cnt = np.unique(h[i], return_index=True, return_counts=True)
            pending[n].append((u, cnt.astype(np.int64), gbase + i[idx]))
            if sum(len(p[0]) for p in pending[n]) > 8_000_000:  # bound the memory of unmerged chunks
                pending[n] = [_reduce(pending[n])]
        bar.update(len(toks))
    bar.close()
    counts = {n: _reduce(p) for n, p in pending.items() if p}
    return counts, total


def _word_hash_at(shards: ShardSet, token_hash: np.ndarray, positions: np.ndarray, span: int,
                  chunk_tokens: int, want_tokens: bool = False):
    """Word hashes of the `span` words at each global word position [K] -> uint64 [K, span]; with
    want_tokens also the words' token ids (list of K lists of span tuples)."""
    K = len(positions)
    out = np.zeros((K, span), dtype=np.uint64)
    toks_out = [None] * K if want_tokens else None
    order = np.argsort(positions)
    sp = positions[order]
    for toks, first, doc, gbase in _chunks(shards, chunk_tokens):
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


def _lookup(table: tuple, h: np.ndarray) -> np.ndarray:
    """Counts of hashes h (0 if absent) in a (sorted hashes, counts, pos) triple."""
    keys, cnt = table[0], table[1]
    i = np.minimum(np.searchsorted(keys, h), len(keys) - 1)
    return np.where(keys[i] == h, cnt[i], 0)


def pmi_scores(sub_counts: np.ndarray, total: int, n: int) -> np.ndarray:
    """Scores of the n-grams whose span counts are `sub_counts` float [K, n, n+1] ([k, a, b] = count
    of words a..b-1 of n-gram k). -> float64 [K]."""
    lc = np.log(np.maximum(sub_counts, 1)) - np.log(max(total, 1))
    best = np.full(len(sub_counts), -np.inf)
    for seg in _segmentations(n):
        best = np.maximum(best, sum(lc[:, a, b] for a, b in seg))
    return lc[:, 0, n] - best


def build_pmi_table(shards_dir: str, out: str, min_count: int = 5, size: int = 20000,
                    split: tuple = DEFAULT_SPLIT, progress: bool = True, overwrite: bool = False,
                    chunk_tokens: int = 4_000_000) -> dict:
    """Count, score, rank and save. -> the manifest dict (also written to <out>/manifest.json)."""
    if len(split) != 4 or not 0.99 < sum(split) < 1.01 or min(split) < 0:
        raise ConfigError(f"PMI size split {split} must have 4 fractions (n=2..5) summing to 1")
    if min_count < 1 or size < 1:
        raise ConfigError("PMI min_count and size must be >= 1")
    shards = ShardSet(shards_dir, "train")
    if not shards.has_word_starts:
        raise DataError(f"{shards_dir} has no word-start bits; re-run `masklab prep`")
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()) and not overwrite:
        raise DataError(f"PMI output {outp} exists and is not empty (pass --overwrite)")
    t0 = time.process_time()
    th = token_hash_table(shards.tokenizer.vocab_size)
    counts, total = count_ngrams(shards, th, MAX_N, chunk_tokens, progress)
    t_count = time.process_time() - t0
    table, scores, kept = {}, {}, {}
    for n, frac in zip(range(2, MAX_N + 1), split):
        keep = int(round(size * frac))
        if n not in counts or keep == 0:
            table[str(n)], scores[str(n)], kept[str(n)] = [], [], 0
            continue
        h, c, p = counts[n]
        cand = np.flatnonzero(c >= min_count)
        wh = _word_hash_at(shards, th, p[cand], n, chunk_tokens)  # [K, n] word hashes
        sub = np.zeros((len(cand), n, n + 1))
        for a in range(n):
            for b in range(a + 1, n + 1):
                sub[:, a, b] = _lookup(counts[b - a], ngram_hashes_rows(wh[:, a:b]))
        s = pmi_scores(sub, total, n)
        best = np.lexsort((h[cand], -s))[:keep]  # highest PMI first; ties by hash: deterministic
        _, toks = _word_hash_at(shards, th, p[cand[best]], n, chunk_tokens, want_tokens=True)
        table[str(n)], scores[str(n)], kept[str(n)] = toks, [round(float(x), 4) for x in s[best]], len(best)
    seconds = time.process_time() - t0
    manifest = {"format": FORMAT, "tokenizer_sha256": shards.tokenizer.sha256,
                "vocab_size": shards.tokenizer.vocab_size, "min_count": min_count, "size": size,
                "split": list(split), "total_words": int(total), "tokens": shards.num_tokens, "kept": kept,
                "distinct_ngrams": {str(n): int(len(v[0])) for n, v in counts.items()},
                "build_cpu_seconds": round(seconds, 3), "count_cpu_seconds": round(t_count, 3),
                "cpu_seconds_per_million_tokens": round(seconds / max(shards.num_tokens, 1) * 1e6, 3)}
    with atomic_dir(outp) as tmp:
        (tmp / "pmi_table.json").write_text(json.dumps({"ngrams": table, "scores": scores}))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclass
class PMITable:
    hashes: dict  # n -> sorted uint64 [K_n] n-gram hashes (what the collator matches)
    token_hash: np.ndarray  # uint64 [V]
    tokenizer_sha256: str
    ngrams: dict = field(default_factory=dict)  # n -> set of tuple(word tuples) (inspection / tests)

    @property
    def max_n(self) -> int:
        return max(self.hashes) if self.hashes else 0

    def contains(self, n: int, h: np.ndarray) -> np.ndarray:
        keys = self.hashes[n]
        if len(keys) == 0:
            return np.zeros(len(h), dtype=bool)
        i = np.minimum(np.searchsorted(keys, h), len(keys) - 1)
        return keys[i] == h


def load_pmi_table(path: str, tokenizer_sha256: Optional[str] = None, vocab_size: Optional[int] = None) -> PMITable:
    """Load and check a table; a table made with another tokenizer is a ConfigError."""
    p = Path(path)
    if not (p / "manifest.json").is_file() or not (p / "pmi_table.json").is_file():
        raise ConfigError(f"masking.pmi_table={path} is not a PMI table directory (build one with `masklab pmi`)")
    m = json.loads((p / "manifest.json").read_text())
    if m.get("format") != FORMAT:
        raise ConfigError(f"PMI table {path}: format '{m.get('format')}' is not {FORMAT} (rebuild with `masklab pmi`)")
    if tokenizer_sha256 is not None and m.get("tokenizer_sha256") != tokenizer_sha256:
        raise ConfigError(f"PMI table {path} was built with another tokenizer (sha256 {str(m.get('tokenizer_sha256'))[:12]}"
                          f" vs the shards' {tokenizer_sha256[:12]}); rebuild it with `masklab pmi`")
    raw = json.loads((p / "pmi_table.json").read_text())["ngrams"]
    th = token_hash_table(max(int(vocab_size or 0), int(m.get("vocab_size", 0))))
    hashes, ngrams = {}, {}
    for n_str, grams in raw.items():
        n = int(n_str)
        ngrams[n] = {tuple(tuple(w) for w in g) for g in grams}
        if not grams:
            hashes[n] = np.zeros(0, np.uint64)
            continue
        words = [w for g in grams for w in g]
        length = np.array([len(w) for w in words], dtype=np.int64)
        toks = np.fromiter((t for w in words for t in w), dtype=np.int64, count=int(length.sum()))
        first = np.cumsum(length) - length
        wh = word_hashes(toks, np.ones(len(toks), bool), first, length, th)
        hashes[n] = np.unique(ngram_hashes_rows(wh.reshape(-1, n)))
    return PMITable(hashes, th, m.get("tokenizer_sha256", ""), ngrams)
