"""PMI table: the word hash sees every token, the table equals a brute-force count (both
counting engines), and tables / runs from before the hash fix are refused."""
import itertools
import json
import math
import shutil

import numpy as np
import pytest

from masklab.data_prep import ShardSet
from masklab.data_prep.ngram_hash import token_hash_table, word_hashes
from masklab.data_prep.pmi import FORMAT, build_pmi_table, load_pmi_table
from masklab.errors import ConfigError


def _hash_one(th, word):
    w = np.asarray(word, np.int64)
    return int(word_hashes(w, np.ones(len(w), bool), np.zeros(1, np.int64), np.array([len(w)]), th)[0])


def test_word_hash_depends_on_every_token():
    """Property over random ids and lengths 1..64: changing any one token changes the hash (the
    float64 powers of v2 were 0 mod 2^64 from the 5th token on)."""
    rng = np.random.default_rng(0)
    th = token_hash_table(1000)
    for _ in range(60):
        n = int(rng.integers(1, 65))
        word = rng.integers(0, 1000, n)
        h = _hash_one(th, word)
        for j in range(n):
            other = word.copy()
            other[j] = (other[j] + 1 + rng.integers(0, 998)) % 1000
            assert _hash_one(th, other) != h, (n, j)
    # many words at once equal one at a time (the vectorised reduceat path)
    words = [rng.integers(0, 1000, int(rng.integers(1, 65))) for _ in range(20)]
    length = np.array([len(w) for w in words])
    toks = np.concatenate(words)
    many = word_hashes(toks, np.ones(len(toks), bool), np.cumsum(length) - length, length, th)
    assert many.tolist() == [_hash_one(th, w) for w in words]


def _brute_force(data, min_count):
    """Every word n-gram (n=1..5) inside a document, counted with Python tuples."""
    sh = ShardSet(data, "train")
    counts, total = {n: {} for n in range(1, 6)}, 0
    for s in sh.shards:
        offs = s.doc_offsets
        for d in range(len(offs) - 1):
            toks = np.asarray(s.tokens[offs[d]:offs[d + 1]]).tolist()
            ws = np.asarray(s.word_starts[offs[d]:offs[d + 1]]).astype(bool)
            ws[0] = True
            cut = np.flatnonzero(ws).tolist() + [len(toks)]
            words = [tuple(toks[a:b]) for a, b in zip(cut[:-1], cut[1:])]
            total += len(words)
            for n in range(1, 6):
                for i in range(len(words) - n + 1):
                    g = tuple(words[i:i + n])
                    counts[n][g] = counts[n].get(g, 0) + 1
    lp = lambda g: math.log(counts[len(g)][g]) - math.log(total)  # noqa: E731
    want = {}
    for n in range(2, 6):
        want[n] = {}
        for g, c in counts[n].items():
            if c < min_count:
                continue
            best = max(sum(lp(g[a:b]) for a, b in zip((0,) + cuts, cuts + (n,)))
                       for k in range(1, n) for cuts in itertools.combinations(range(1, n), k))
            want[n][g] = (c, lp(g) - best)
    return want


@pytest.fixture(scope="module")
def small_vocab_data(tmp_path_factory):
    """A small vocabulary makes long words (5+ tokens) common: the v2 hash conflated them."""
    from masklab.data_prep import PrepOptions, prepare

    out = tmp_path_factory.mktemp("data") / "pydoc300_v400"
    prepare(PrepOptions(source="pydoc", out=str(out), max_documents=300, vocab_size=400))
    return out


@pytest.mark.parametrize("engine", ["numpy", "duckdb"])
def test_table_equals_brute_force_count(small_vocab_data, tmp_path, engine):
    build_pmi_table(str(small_vocab_data), str(tmp_path / "t"), min_count=2, size=4_000_000, progress=False,
                    engine=engine, chunk_tokens=5000)  # several chunks: merging across chunks is exercised
    got = json.loads((tmp_path / "t" / "pmi_table.json").read_text())
    want = _brute_force(small_vocab_data, 2)
    for n in range(2, 6):
        grams = [tuple(tuple(w) for w in g) for g in got["ngrams"][str(n)]]
        assert set(grams) == set(want[n]), n
        assert got["counts"][str(n)] == [want[n][g][0] for g in grams]
        assert np.allclose(got["scores"][str(n)], [want[n][g][1] for g in grams], atol=6e-5, rtol=0)
        assert all(a >= b for a, b in zip(got["scores"][str(n)], got["scores"][str(n)][1:]))  # best first


def test_engines_give_the_same_table(prepared_data, tmp_path):
    for e in ("numpy", "duckdb"):
        build_pmi_table(str(prepared_data), str(tmp_path / e), min_count=2, size=600, progress=False, engine=e)
    assert (tmp_path / "numpy" / "pmi_table.json").read_text() == (tmp_path / "duckdb" / "pmi_table.json").read_text()


def test_bad_memory_limit_and_engine(prepared_data, tmp_path):
    with pytest.raises(ConfigError, match="memory-limit 'lots' is not"):
        build_pmi_table(str(prepared_data), str(tmp_path / "t"), progress=False, memory_limit="lots")
    with pytest.raises(ConfigError, match="engine 'polars' is not one of duckdb, numpy"):
        build_pmi_table(str(prepared_data), str(tmp_path / "t"), progress=False, engine="polars")
    assert not (tmp_path / "t").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_table_of_the_old_format_is_refused(pmi_table, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(pmi_table, old)
    m = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**m, "format": "masklab-pmi-v2"}))
    assert FORMAT == "masklab-pmi-v3"
    with pytest.raises(ConfigError, match="format 'masklab-pmi-v2' is not masklab-pmi-v3.*rebuild"):
        load_pmi_table(str(old))
