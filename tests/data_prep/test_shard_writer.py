"""Shard files written part by part are np.save's bytes; shards split at the token limit."""
import hashlib
import io

import numpy as np
import pytest

from masklab.data_prep.shard_writer import ShardWriter, save_hashed


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_parts_written_one_by_one_are_the_bytes_of_np_save_of_their_concatenation(tmp_path, dtype):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 200, n).astype(dtype) for n in (5, 0, 1000, 1)]
    digest = save_hashed(tmp_path / "a.npy", parts, dtype)
    ref = io.BytesIO()
    np.save(ref, np.concatenate(parts), allow_pickle=False)
    data = (tmp_path / "a.npy").read_bytes()
    assert data == ref.getvalue()
    assert digest == hashlib.sha256(data).hexdigest()
    assert save_hashed(tmp_path / "empty.npy", [], dtype) and np.load(tmp_path / "empty.npy").shape == (0,)


def test_shards_split_at_the_token_limit_and_round_trip(tmp_path):
    w = ShardWriter(tmp_path, "shard_00007", vocab_size=30_000, shard_tokens=100)
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 30_000, n).astype(np.uint32) for n in (40, 0, 70, 30, 5)]
    for d in docs:
        w.add(d, (d % 2).astype(np.uint8), np.array([len(d)], dtype=np.int64))
    entries = w.close()
    assert [e["tokens"] for e in entries] == [110, 35]  # flushed once past 100; the empty document dropped
    assert [e["documents"] for e in entries] == [2, 2]
    toks = np.concatenate([np.load(tmp_path / e["name"] / "tokens.npy") for e in entries])
    assert toks.dtype == np.uint16 and np.array_equal(toks, np.concatenate(docs))
    offsets = np.load(tmp_path / entries[0]["name"] / "doc_offsets.npy")
    assert offsets.tolist() == [0, 40, 110]
    for e in entries:
        for name, sha in e["sha256"].items():
            assert hashlib.sha256((tmp_path / e["name"] / name).read_bytes()).hexdigest() == sha
