"""Issue 35 items 3 and 10: a hostile data folder (ids >= vocab, broken offsets, stray word-start
bits, shards of another prep) whose manifest was re-hashed to match is refused by `masklab verify`
and, cheaply, at training start: one line, exit 2, never an IndexError."""
import json

import numpy as np
import pytest

from masklab.cli import main
from masklab.data_prep.tokenizer import file_sha256
from tests.conftest import TINY

pytestmark = pytest.mark.reliability


def _rehash(d, split, entry):
    for f in ("tokens.npy", "word_starts.npy", "doc_offsets.npy"):
        entry["sha256"][f] = file_sha256(d / split / entry["name"] / f)


def _hostile(d, how: str):
    """Damage shard 0 of train, then re-hash the manifest so every sha256 matches again."""
    m = json.loads((d / "manifest.json").read_text())
    e = m["splits"]["train"][0]
    sd = d / "train" / e["name"]
    vocab = m["tokenizer"]["vocab_size"]
    if how == "ids":
        t = np.load(sd / "tokens.npy")
        t[::40] = vocab + 7  # in every sample a training step reads
        np.save(sd / "tokens.npy", t)
    elif how in ("offsets", "offsets_end"):
        o = np.load(sd / "doc_offsets.npy")
        if how == "offsets":
            o[2], o[3] = o[3], o[2]  # not monotone
        else:
            o[-1] += 1000  # beyond the tokens
        np.save(sd / "doc_offsets.npy", o)
    elif how == "bits":
        w = np.load(sd / "word_starts.npy")
        w[10] = 7
        np.save(sd / "word_starts.npy", w)
    elif how == "foreign_shard":
        e["tokenizer_sha256"] = "0" * 64  # a shard encoded with another tokenizer, mixed in
    _rehash(d, "train", e)
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    (d / "verified.json").unlink(missing_ok=True)


CASES = {"ids": "outside the vocabulary", "offsets": "doc_offsets decrease", "offsets_end": "do not run from 0",
         "bits": "word-start bit 7", "foreign_shard": "encoded for another tokenizer"}


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


def test_clean_data_verifies_with_content(data_copy, capsys):
    rc, io = _cli(capsys, "verify", data_copy)
    assert rc == 0 and "content of" in io.out and "ids < vocab" in io.out, io


@pytest.mark.parametrize("how", list(CASES))
def test_verify_refuses_hostile_content_even_with_matching_hashes(data_copy, capsys, how):
    _hostile(data_copy, how)
    rc, io = _cli(capsys, "verify", data_copy)
    assert rc == 2 and CASES[how] in io.err and len(io.err.strip().splitlines()) == 1, io


@pytest.mark.parametrize("how,workers", [("ids", 0), ("ids", 1), ("offsets", 0)])
def test_training_on_hostile_data_is_one_line_not_an_index_error(data_copy, tmp_path, capsys, how, workers):
    _hostile(data_copy, how)
    rc, io = _cli(capsys, "train", "configs/smoke_cpu.yaml", *TINY, f"data.shards={data_copy}",
                  f"train.out_dir={tmp_path / 'run'}", "train.max_steps=1", f"data.num_workers={workers}")
    assert rc == 2 and CASES[how] in io.err and "Traceback" not in io.err, io.err[-2000:]
    assert len(io.err.strip().splitlines()) == 1, io.err[-2000:]
