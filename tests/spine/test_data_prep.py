import json

import numpy as np
import pytest

from masklab.data_prep import PrepOptions, ShardSet, load_tokenizer, prepare
from masklab.errors import DataError


def test_prep_writes_shards_and_manifest(prepared_data):
    m = json.loads((prepared_data / "manifest.json").read_text())
    assert m["counts"]["train"]["documents"] > 0 and m["counts"]["validation"]["documents"] > 0
    s = ShardSet(prepared_data, "train")
    assert s.num_tokens == m["counts"]["train"]["tokens"]
    sh = s.shards[0]
    assert sh.tokens.dtype == np.uint16 and sh.word_starts.shape == sh.tokens.shape
    assert isinstance(sh.tokens, np.memmap)
    # no special token inside the packed documents
    assert not np.isin(np.asarray(sh.tokens), list(s.tokenizer.special_ids)).any()
    tok, info = load_tokenizer(prepared_data / "tokenizer")
    assert info.sha256 == m["tokenizer"]["sha256"]
    # word starts: a WordPiece continuation (##) never starts a word
    vocab = {i: t for t, i in tok.get_vocab().items()}
    toks = np.asarray(sh.tokens[:5000])
    cont = np.array([vocab[int(t)].startswith("##") for t in toks])
    assert cont.any() and not (np.asarray(sh.word_starts[:5000])[cont]).any()


def test_own_txt_dir_with_invalid_utf8_is_skipped_and_counted(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    good = "The quick brown fox jumps over the lazy dog near the river bank.\n"
    (src / "a.txt").write_bytes((good * 3 + "\n").encode() * 40 + b"bad \xff\xfe line\n\n" + (good * 2).encode())
    (src / "b.jsonl").write_text("\n".join(json.dumps({"text": good * 2}) for _ in range(20)))
    out = tmp_path / "out"
    prepare(PrepOptions(source=str(src), out=str(out), vocab_size=200))
    m = json.loads((out / "manifest.json").read_text())
    assert m["invalid_utf8_lines_skipped"] == 1
    assert m["counts"]["train"]["documents"] + m["counts"]["validation"]["documents"] == 40 + 1 + 20


def test_empty_corpus_is_an_error_and_writes_nothing(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    (src / "a.txt").write_text("\n\n   \n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="empty"):
        prepare(PrepOptions(source=str(src), out=str(out)))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_untouched_on_failure(tmp_path, prepared_data):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        prepare(PrepOptions(source="pydoc", out=str(out)))
    src = tmp_path / "jsonl"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"body": "hello world"}) + "\n")
    with pytest.raises(DataError, match="no column 'text'.*body"):
        prepare(PrepOptions(source=str(src), out=str(out), overwrite=True))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_missing_tokenizer_and_shard_dir(tmp_path):
    with pytest.raises(DataError, match="tokenizer not found"):
        prepare(PrepOptions(source="pydoc", out=str(tmp_path / "o"), tokenizer=str(tmp_path / "nope")))
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="shard directory not found"):
        ShardSet(tmp_path / "missing")


def test_checksum_mismatch_is_detected(prepared_data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_data, copy)
    f = copy / "train" / "shard_00000" / "tokens.npy"
    arr = np.load(f)
    arr[10] = (int(arr[10]) + 1) % 100
    np.save(f, arr)
    with pytest.raises(DataError, match="checksum mismatch"):
        ShardSet(copy, "train")


def test_python_api_accepts_path_objects(prepared_data, tmp_path):
    """PrepOptions(tokenizer=Path(...)) used to crash writing the plan (PosixPath is not JSON)."""
    from masklab.data_prep import PrepOptions, ShardSet, prepare

    out = prepare(PrepOptions(source="pydoc", out=tmp_path / "d", tokenizer=prepared_data / "tokenizer",
                              max_documents=40, validation_fraction=0))
    assert ShardSet(out, "train").num_tokens > 0
