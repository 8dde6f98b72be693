"""PMI n-gram table for PMI masking (Levine et al. 2021, "PMI-Masking"), built from the shards.

For every word n-gram (n = 2..5) seen at least `min_count` times the score is PMI with the
minimum over segmentations:
    PMI_min(w1..wn) = log p(w1..wn) - max_{segmentations s into >= 2 parts} sum_{part} log p(part)
with p = count / total words. Each length is ranked on its own; the table keeps `size`
n-grams split across lengths (default 50% bigrams, 25% trigrams, 12.5% 4- and 5-grams).

Counting (words and n-grams as 64-bit hashes, data_prep.ngram_hash) runs out of core in
DuckDB (data_prep.pmi_duckdb, `engine="duckdb"`, memory bounded by `memory_limit`) or in
memory with numpy (data_prep.pmi_count, `engine="numpy"`); both give the same table. Only
n-grams with count >= min_count are kept after counting: every part of such an n-gram is at
least as frequent, so the scores need nothing else. The collator matches n-grams with the same
hash functions (pretrain.masking.segment).

Output: <out>/pmi_table.json ({"ngrams": {n: [[word token ids, ...], ...]} best first,
"scores", "counts"}) and <out>/manifest.json (tokenizer sha256, parameters, counts, build
time), written atomically.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.atomic import atomic_dir, refuse_overlap, unique_tag
from masklab.data_prep.ngram_hash import ngram_hashes_rows, token_hash_table, word_hashes
from masklab.data_prep.pmi_count import MAX_N, count_ngrams, word_hash_at
from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError, DataError

DEFAULT_SPLIT = (0.5, 0.25, 0.125, 0.125)
# v3: word hashes depend on every token (v2's powers of Q were 0 from the 5th token on) + counts
FORMAT = "masklab-pmi-v3"
ENGINES = ("duckdb", "numpy")


def _segmentations(n: int):
    """All ways to cut n items into >= 2 contiguous parts, as lists of (start, end)."""
    for cuts in range(1, n):
        for pos in itertools.combinations(range(1, n), cuts):
            b = (0,) + pos + (n,)
            yield [(b[i], b[i + 1]) for i in range(len(b) - 1)]


def _lookup(table: tuple, h: np.ndarray) -> np.ndarray:
    """Counts of hashes h (0 if absent) in a (sorted hashes, counts, pos) triple."""
    keys, cnt = table[0], table[1]
    if len(keys) == 0:
        return np.zeros(len(h), np.int64)
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


def _count(shards, th, min_count, engine, memory_limit, chunk_tokens, progress, work_dir):
    if engine == "numpy":
        return count_ngrams(shards, th, min_count, MAX_N, chunk_tokens, progress)
    from masklab.data_prep.pmi_duckdb import count_ngrams_duckdb

    return count_ngrams_duckdb(shards, th, min_count, work_dir, memory_limit, MAX_N, chunk_tokens, progress)


def build_pmi_table(shards_dir: str, out: str, min_count: int = 5, size: int = 20000,
                    split: tuple = DEFAULT_SPLIT, progress: bool = True, overwrite: bool = False,
                    chunk_tokens: int = 1_000_000, engine: str = "duckdb", memory_limit: str = "2GB") -> dict:
    """Count, score, rank and save. -> the manifest dict (also written to <out>/manifest.json)."""
    if len(split) != 4 or not 0.99 < sum(split) < 1.01 or min(split) < 0:
        raise ConfigError(f"PMI size split {split} must have 4 fractions (n=2..5) summing to 1")
    if min_count < 1 or size < 1:
        raise ConfigError("PMI min_count and size must be >= 1")
    if engine not in ENGINES:
        raise ConfigError(f"PMI engine '{engine}' is not one of {', '.join(ENGINES)}")
    refuse_overlap(out, {"--shards": shards_dir})
    shards = ShardSet(shards_dir, "train")
    if not shards.has_word_starts:
        raise DataError(f"{shards_dir} has no word-start bits; re-run `masklab prep`")
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()) and not overwrite:
        raise DataError(f"PMI output {outp} exists and is not empty (pass --overwrite)")
    t0 = time.process_time()
    th = token_hash_table(shards.tokenizer.vocab_size)
    counts, total, distinct = _count(shards, th, min_count, engine, memory_limit, chunk_tokens, progress,
                                     outp.parent / f".{outp.name}.duckdb-{unique_tag()}")
    t_count = time.process_time() - t0
    table, scores, freq, kept = {}, {}, {}, {}
    for n, frac in zip(range(2, MAX_N + 1), split):
        keep = int(round(size * frac))
        if n not in counts or keep == 0:
            table[str(n)], scores[str(n)], freq[str(n)], kept[str(n)] = [], [], [], 0
            continue
        h, c, p = counts[n]
        wh = word_hash_at(shards, th, p, n, chunk_tokens)  # [K, n] word hashes
        sub = np.zeros((len(h), n, n + 1))
        for a in range(n):
            for b in range(a + 1, n + 1):
                sub[:, a, b] = _lookup(counts[b - a], ngram_hashes_rows(wh[:, a:b]))
        s = pmi_scores(sub, total, n)
        best = np.lexsort((h, -s))[:keep]  # highest PMI first; ties by hash: deterministic
        _, toks = word_hash_at(shards, th, p[best], n, chunk_tokens, want_tokens=True)
        table[str(n)], scores[str(n)] = toks, [round(float(x), 4) for x in s[best]]
        freq[str(n)], kept[str(n)] = c[best].tolist(), len(best)
    seconds = time.process_time() - t0
    manifest = {"format": FORMAT, "tokenizer_sha256": shards.tokenizer.sha256,
                "vocab_size": shards.tokenizer.vocab_size, "min_count": min_count, "size": size,
                "split": list(split), "engine": engine, "total_words": int(total), "tokens": shards.num_tokens,
                "kept": kept, "distinct_ngrams": {str(n): int(k) for n, k in distinct.items()},
                "build_cpu_seconds": round(seconds, 3), "count_cpu_seconds": round(t_count, 3),
                "cpu_seconds_per_million_tokens": round(seconds / max(shards.num_tokens, 1) * 1e6, 3)}
    with atomic_dir(outp) as tmp:
        (tmp / "pmi_table.json").write_text(json.dumps({"ngrams": table, "scores": scores, "counts": freq}))
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
    """Load and check a table; a table made with another tokenizer or format is a ConfigError."""
    p = Path(path)
    if not (p / "manifest.json").is_file() or not (p / "pmi_table.json").is_file():
        raise ConfigError(f"masking.pmi_table={path} is not a PMI table directory (build one with `masklab pmi`)")
    m = json.loads((p / "manifest.json").read_text())
    if m.get("format") != FORMAT:
        raise ConfigError(f"PMI table {path}: format '{m.get('format')}' is not {FORMAT} (tables before v3 hashed "
                          "words by their first 4 tokens only); rebuild it with `masklab pmi`")
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
