"""PMI n-gram table for PMI masking (Levine et al. 2021), built once from the tokenized shards.

Words are the word-start-delimited token runs stored in the shards. For every word n-gram
(n = 2..5) with count >= min_count, the score is PMI with the minimum over segmentations:
    PMI_min(w1..wn) = log p(w1..wn) - max_{segmentations s, |s| >= 2} sum_{part in s} log p(part)
(probabilities are counts / total words). Each length is ranked on its own; the table keeps
`size` n-grams split across lengths (default 50% bigrams, 25% trigrams, 12.5% 4- and 5-grams).
Counting streams document by document; only the n-gram counters live in memory.
Output: <out>/pmi_table.json (n-grams as lists of words, words as token-id lists) and
<out>/manifest.json (tokenizer sha256, parameters, counts), written atomically.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from data_prep.shards import ShardSet
from masklab.errors import ConfigError, DataError

DEFAULT_SPLIT = (0.5, 0.25, 0.125, 0.125)


def _segmentations(n: int):
    """All ways to cut n items into >= 2 contiguous parts, as lists of (start, end)."""
    for cuts in range(1, n):
        for pos in itertools.combinations(range(1, n), cuts):
            b = (0,) + pos + (n,)
            yield [(b[i], b[i + 1]) for i in range(len(b) - 1)]


def count_ngrams(shards: ShardSet, max_n: int = 5, progress: bool = True):
    """-> (counts: {n: Counter[tuple[word ids]]}, words: list[tuple[token ids]], total words)."""
    vocab: dict[tuple, int] = {}
    counts = {n: Counter() for n in range(1, max_n + 1)}
    total = 0
    n_docs = shards.num_documents
    bar = tqdm(total=n_docs, desc="pmi counts", disable=not progress)
    for sh in shards.shards:
        offs = np.asarray(sh.doc_offsets)
        for d in range(len(offs) - 1):
            toks = np.asarray(sh.tokens[offs[d]:offs[d + 1]], dtype=np.int64)
            starts = np.flatnonzero(np.asarray(sh.word_starts[offs[d]:offs[d + 1]]))
            if len(starts) == 0 or starts[0] != 0:
                starts = np.concatenate([[0], starts])
            bounds = np.append(starts, len(toks))
            ids = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                w = tuple(toks[a:b].tolist())
                ids.append(vocab.setdefault(w, len(vocab)))
            total += len(ids)
            for n in range(1, max_n + 1):
                if len(ids) >= n:
                    counts[n].update(zip(*(ids[i:] for i in range(n))))
            bar.update(1)
    bar.close()
    words = [None] * len(vocab)
    for w, i in vocab.items():
        words[i] = w
    return counts, words, total


def pmi_scores(counts, total: int, n: int, min_count: int) -> list[tuple[float, tuple]]:
    logN = math.log(max(total, 1))
    lp = lambda g: math.log(counts[len(g)][g]) - logN  # noqa: E731
    segs = list(_segmentations(n))
    out = []
    for g, c in counts[n].items():
        if c < min_count:
            continue
        best = max(sum(lp(g[a:b]) for a, b in s) for s in segs)
        out.append((lp(g) - best, g))
    out.sort(key=lambda x: (-x[0], x[1]))
    return out


def build_pmi_table(shards_dir: str, out: str, min_count: int = 5, size: int = 20000,
                    split: tuple = DEFAULT_SPLIT, progress: bool = True, overwrite: bool = False) -> dict:
    if not 0.99 < sum(split) < 1.01 or len(split) != 4:
        raise ConfigError(f"PMI size split {split} must have 4 fractions (n=2..5) summing to 1")
    if min_count < 1 or size < 1:
        raise ConfigError("PMI min_count and size must be >= 1")
    shards = ShardSet(shards_dir, "train")
    if not shards.has_word_starts:
        raise DataError(f"{shards_dir} has no word-start bits; re-run `masklab prep`")
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()) and not overwrite:
        raise DataError(f"PMI output {outp} exists and is not empty (pass --overwrite)")
    t0 = time.time()
    counts, words, total = count_ngrams(shards, 5, progress)
    table, kept = {}, {}
    for n, frac in zip(range(2, 6), split):
        ranked = pmi_scores(counts, total, n, min_count)[: int(round(size * frac))]
        table[str(n)] = [[list(words[w]) for w in g] for _, g in ranked]
        kept[str(n)] = len(ranked)
    seconds = time.time() - t0
    manifest = {"format": "masklab-pmi-v1", "tokenizer_sha256": shards.tokenizer.sha256, "min_count": min_count,
                "size": size, "split": list(split), "total_words": total, "tokens": shards.num_tokens,
                "kept": kept, "build_seconds": round(seconds, 2),
                "seconds_per_million_tokens": round(seconds / max(shards.num_tokens, 1) * 1e6, 2)}
    tmp = outp.parent / f".{outp.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "pmi_table.json").write_text(json.dumps(table))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if outp.exists():
            shutil.rmtree(outp)
        outp.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, outp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


@dataclass
class PMITable:
    ngrams: dict  # n -> set of tuple(word tuples)
    max_n: int
    tokenizer_sha256: str


def load_pmi_table(path: str, tokenizer_sha256: Optional[str] = None) -> PMITable:
    p = Path(path)
    if not (p / "manifest.json").is_file() or not (p / "pmi_table.json").is_file():
        raise ConfigError(f"masking.pmi_table={path} is not a PMI table directory (run `masklab pmi`)")
    m = json.loads((p / "manifest.json").read_text())
    if tokenizer_sha256 is not None and m.get("tokenizer_sha256") != tokenizer_sha256:
        raise ConfigError(f"PMI table {path} was built with another tokenizer (sha256 {m.get('tokenizer_sha256', '?')[:12]}"
                          f" vs the shards' {tokenizer_sha256[:12]}); rebuild it with `masklab pmi`")
    raw = json.loads((p / "pmi_table.json").read_text())
    ngrams = {int(n): {tuple(tuple(w) for w in g) for g in lst} for n, lst in raw.items()}
    return PMITable(ngrams, max(ngrams) if ngrams else 0, m.get("tokenizer_sha256", ""))
