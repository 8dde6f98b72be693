"""Identical output for any parallelism; two preps are byte-identical; a failed task is rerun alone."""
import json

import pytest

from masklab.data_prep import PrepOptions, ShardSet, prepare
from masklab.data_prep import executors
from masklab.data_prep.worker import unit_record
from masklab.errors import DataError
from tests.data_prep.conftest import tree_bytes

OPTS = dict(vocab_size=1500, chunk_bytes=20_000, shard_tokens=5_000)


@pytest.fixture(scope="module")
def reference(mixed_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "data"
    prepare(PrepOptions(source=str(mixed_corpus), out=str(out), **OPTS))
    return out


def test_reference_has_several_units_and_shards(reference):
    m = json.loads((reference / "manifest.json").read_text())
    assert m["units"] >= 6 and len(m["splits"]["train"]) >= 6
    assert [e["name"] for e in m["splits"]["train"]][:2] == ["shard_00000", "shard_00001"]
    assert ShardSet(reference, "train").num_tokens == m["counts"]["train"]["tokens"]


@pytest.mark.parametrize("parallel", [dict(num_proc=1), dict(num_proc=2), dict(executor="local", tasks=4, num_proc=2)],
                         ids=["again", "num_proc2", "local_tasks4"])
def test_output_is_byte_identical_whatever_the_parallelism(mixed_corpus, reference, tmp_path, parallel):
    """Tokens, word starts, document order, split, tokenizer.json and manifest: every byte."""
    out = tmp_path / "data"
    prepare(PrepOptions(source=str(mixed_corpus), out=str(out), **OPTS, **parallel))
    assert tree_bytes(out) == tree_bytes(reference)


def test_a_failed_task_is_rerun_alone_and_the_output_equals_an_uninterrupted_run(
        mixed_corpus, reference, tmp_path, monkeypatch):
    out = tmp_path / "data"
    opts = PrepOptions(source=str(mixed_corpus), out=str(out), executor="local", tasks=4, **OPTS)
    real, calls = executors.encode_unit, []

    def dies_on_unit_3(work, plan, index, *a):
        calls.append(index)
        if index == 3:
            (work / "train" / "shard_00003_000").mkdir(parents=True)  # what a kill leaves behind
            raise RuntimeError("task killed")
        return real(work, plan, index, *a)

    monkeypatch.setattr(executors, "encode_unit", dies_on_unit_3)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(opts)
    assert not out.exists()
    with pytest.raises(DataError, match="not ready: its prep has not finished"):
        ShardSet(out, "train")
    first = list(calls)
    calls.clear()

    def encodes(work, plan, index, *a):  # a unit whose record exists is read back, not encoded
        if not unit_record(work, index).is_file():
            calls.append(index)
        return real(work, plan, index, *a)

    monkeypatch.setattr(executors, "encode_unit", encodes)
    prepare(opts)
    n_units = json.loads((reference / "manifest.json").read_text())["units"]
    done_before = [i for i in first if i != 3]
    assert 3 in calls and not set(calls) & set(done_before)  # only the missing units were encoded
    assert sorted(calls + done_before) == list(range(n_units))
    assert tree_bytes(out) == tree_bytes(reference)


def test_many_small_files_give_few_units_and_the_same_bytes_in_parallel(tmp_path, docs):
    """120 files of ~3.5 KB, chunk 200 KB: grouped into units of <= 25 KB (chunk_bytes / 8), so
    shards and manifest entries grow with bytes, not files; 2 processes write the same bytes."""
    corpus = tmp_path / "many"
    corpus.mkdir()
    for k in range(120):
        (corpus / f"doc_{k:03d}.txt").write_text("\n\n".join(docs[k * 20:(k + 1) * 20]) + "\n")
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"data{n}"
        prepare(PrepOptions(source=str(corpus), out=str(outs[n]), num_proc=n, **{**OPTS, "chunk_bytes": 200_000}))
    m = json.loads((outs[1] / "manifest.json").read_text())
    assert 12 <= m["units"] <= 24  # ~420 KB in groups of up to 25 KB (7 whole files)
    assert len(m["splits"]["train"]) <= 3 * m["units"]
    assert tree_bytes(outs[2]) == tree_bytes(outs[1])
