"""Out-of-core word n-gram counts with DuckDB (in-process; its hash aggregate is radix-partitioned
and spills to disk beyond `memory_limit`), for corpora whose distinct n-grams do not fit in RAM.

Each chunk of documents is pre-reduced in numpy exactly as the in-memory path does
(data_prep.pmi_count.chunk_ngrams) and appended to a DuckDB table through Arrow; one
GROUP BY (n, hash) then sums the counts and keeps the first position. Time is linear in the
corpus and memory is bounded by the setting plus one chunk; the result (pruned to min_count)
equals pmi_count.count_ngrams bit for bit.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from masklab.data_prep.pmi_count import MAX_N, chunk_ngrams, chunks
from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError


def _connect(work_dir: Path, memory_limit: str):
    import duckdb
    import pyarrow  # noqa: F401  (DuckDB reads the chunks through Arrow)

    con = duckdb.connect(str(work_dir / "counts.duckdb"))
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    except duckdb.Error as e:
        con.close()
        raise ConfigError(f"PMI --memory-limit '{memory_limit}' is not a DuckDB memory size such as 2GB "
                          f"({str(e).splitlines()[0]})") from None
    con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("CREATE TABLE raw (n UTINYINT, h UBIGINT, c BIGINT, pos BIGINT)")
    return con


def count_ngrams_duckdb(shards: ShardSet, token_hash: np.ndarray, min_count: int, work_dir: str | Path,
                        memory_limit: str = "2GB", max_n: int = MAX_N, chunk_tokens: int = 4_000_000,
                        progress: bool = True):
    """Same contract as pmi_count.count_ngrams. `work_dir` (created, then removed) holds DuckDB's
    database and spill files."""
    import pyarrow as pa

    if any(c in memory_limit for c in "'\\;"):
        raise ConfigError(f"PMI --memory-limit '{memory_limit}' is not a memory size such as 2GB")
    work = Path(work_dir)
    work.mkdir(parents=True)  # a fresh name (host-pid-random): an existing folder is never reused nor deleted
    try:
        con = _connect(work, memory_limit)
        total = 0
        bar = tqdm(total=shards.num_tokens, desc="pmi counts (duckdb)", unit="tok", disable=not progress)
        for toks, first, doc, gbase in chunks(shards, chunk_tokens):
            W, grams = chunk_ngrams(toks, first, doc, gbase, token_hash, max_n)
            total += W
            if grams:
                ns = np.concatenate([np.full(len(t[0]), n, np.uint8) for n, t in grams.items()])
                cols = [np.concatenate([t[k] for t in grams.values()]) for k in range(3)]
                con.register("chunk", pa.table({"n": ns, "h": cols[0], "c": cols[1], "pos": cols[2]}))
                con.execute("INSERT INTO raw SELECT * FROM chunk")
                con.unregister("chunk")
            bar.update(len(toks))
        bar.close()
        con.execute("CREATE TABLE agg AS SELECT n, h, sum(c)::BIGINT AS c, min(pos) AS pos FROM raw GROUP BY n, h")
        con.execute("DROP TABLE raw")
        distinct = {int(n): int(k) for n, k in con.execute("SELECT n, count(*) FROM agg GROUP BY n").fetchall()}
        counts = {}
        for n in sorted(distinct):
            r = con.execute("SELECT h, c, pos FROM agg WHERE n = ? AND c >= ? ORDER BY h", [n, min_count]).fetchnumpy()
            counts[n] = (np.asarray(r["h"], np.uint64), np.asarray(r["c"], np.int64), np.asarray(r["pos"], np.int64))
        con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return counts, total, distinct
