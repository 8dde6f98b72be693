"""Start-up verification: cheap at every start, still catching corrupted shards and a swapped tokenizer."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import masklab.data_prep.verify as V
from masklab.data_prep import ShardSet
from masklab.errors import DataError


def _shard_hashes(monkeypatch) -> list:
    seen = []
    real = V.file_sha256

    def counting(p):
        seen.append(str(p))
        return real(p)

    monkeypatch.setattr(V, "file_sha256", counting)
    return seen


def test_a_verified_data_dir_opens_without_hashing_shards(data_copy, monkeypatch):
    ShardSet(data_copy, "train")  # first open of each split (no stamp yet): full hash once, stamp written
    ShardSet(data_copy, "validation")
    assert json.loads((data_copy / V.STAMP).read_text())["digest"] == V.content_digest(
        json.loads((data_copy / "manifest.json").read_text()))
    seen = _shard_hashes(monkeypatch)
    ShardSet(data_copy, "train")
    ShardSet(data_copy, "validation")
    assert [p for p in seen if "shard_" in p] == []  # only the (small) tokenizer file is hashed


def test_an_edited_shard_is_detected(data_copy):
    ShardSet(data_copy, "train")
    f = data_copy / "train" / "shard_00000" / "tokens.npy"
    with open(f, "r+b") as h:  # in place, same size: only the content (and mtime) changes
        h.seek(os.path.getsize(f) // 2)
        b = h.read(1)
        h.seek(-1, 1)
        h.write(bytes([b[0] ^ 1]))
    with pytest.raises(DataError, match="checksum mismatch.*tokens.npy"):
        ShardSet(data_copy, "train")


def test_corruption_that_kept_the_mtime_is_caught_by_the_sampled_blocks(data_copy):
    ShardSet(data_copy, "train")
    f = data_copy / "train" / "shard_00000" / "word_starts.npy"
    st = f.stat()
    with open(f, "r+b") as h:
        h.seek(st.st_size - 3)  # the last block is always sampled
        h.write(b"\x07")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match="sampled blocks differ"):
        ShardSet(data_copy, "train")


def test_a_truncated_shard_fails_the_header_check(data_copy):
    ShardSet(data_copy, "train")
    f = data_copy / "train" / "shard_00000" / "doc_offsets.npy"
    os.truncate(f, f.stat().st_size - 8)
    with pytest.raises(DataError, match="truncated or does not match the manifest"):
        ShardSet(data_copy, "train")


def test_a_swapped_tokenizer_is_refused(data_copy, tmp_path):
    tok = data_copy / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[MASK]"', '"[MASK2]"'))
    with pytest.raises(DataError, match="not the tokenizer these shards were made with"):
        ShardSet(data_copy, "train")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "masklab.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_masklab_verify_cli(data_copy, tmp_path):
    r = _cli("verify", str(data_copy))
    assert r.returncode == 0 and "verified" in r.stdout and "shard files match" in r.stdout, r.stderr
    f = data_copy / "validation" / "shard_00000" / "tokens.npy"
    arr = np.load(f)
    arr[0] = (int(arr[0]) + 1) % 50
    st = f.stat()
    np.save(f, arr)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # only a full hash can see this one
    r = _cli("verify", str(data_copy))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and "Traceback" not in r.stderr
    r = _cli("verify", str(tmp_path / "nope"))
    assert r.returncode == 2 and "shard directory not found" in r.stderr


def test_an_unwritable_data_dir_keeps_its_stamp_in_the_cache(data_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (data_copy / V.STAMP).unlink(missing_ok=True)
    real = os.replace

    def replace(src, dst):  # root can write anywhere: refuse writes into the data dir instead of chmod
        if str(dst).startswith(str(data_copy)):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(V.os, "replace", replace)
    ShardSet(data_copy, "train")
    assert not (data_copy / V.STAMP).exists() and not list(data_copy.glob(".verified*"))
    assert len(list((tmp_path / "home" / ".cache" / "masklab" / "verified").glob("*.json"))) == 1
    seen = _shard_hashes(monkeypatch)
    ShardSet(data_copy, "train")
    assert [p for p in seen if "shard_" in p] == []


def test_a_fresh_prep_is_stamped_and_its_first_open_hashes_no_shard(tmp_path, monkeypatch):
    """The prep took every shard's sha256 while writing it, so it writes the stamp itself: the first
    training start does the quick check, not a full re-hash of the corpus."""
    from masklab.data_prep import PrepOptions, prepare

    out = prepare(PrepOptions(source="pydoc", out=str(tmp_path / "d"), vocab_size=500, max_documents=200))
    assert (out / V.STAMP).is_file()
    seen = _shard_hashes(monkeypatch)
    ShardSet(out, "train")
    ShardSet(out, "validation")
    assert [p for p in seen if "shard_" in p] == []
    f = out / "train" / "shard_00000" / "tokens.npy"  # and the stamp still catches an edit
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch"):
        ShardSet(out, "train")
