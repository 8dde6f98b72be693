"""`masklab prep` on bad input, through the CLI: exit 2, one `masklab prep: error:` line that names
the problem (file and line where there is one), no traceback, and the output directory as it was
(absent, or every byte of a previous one) with nothing left next to it but the executor's logs.
Also: a file that vanishes between planning and encoding, a real full disk, and a bad input met by
a datatrove task (whose completed siblings must not be skipped once the input is fixed)."""
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from masklab.data_prep import PrepOptions, prepare
from masklab.data_prep import prep as prep_module
from masklab.errors import DataError
from tests.data_prep.conftest import tree_bytes
from tests.small_filesystem import small_tmpfs

pytestmark = pytest.mark.reliability

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SMALL = ("--vocab-size", "300")


def run_prep(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masklab.cli", "prep", "--corpus", str(corpus), "--out", str(out),
                           *SMALL, *extra], capture_output=True, text=True, env=ENV, timeout=600)


def error_line(r: subprocess.CompletedProcess, *names: str) -> str:
    """-> the one error line, after checking exit 2, no traceback, and that it names `names`."""
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("masklab prep: error:")]
    assert len(lines) == 1, r.stderr[-3000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def state(parent: Path) -> dict:
    """Every entry under `parent` (hidden ones too): {relative path: bytes, or None for a directory}."""
    return {str(p.relative_to(parent)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(parent.rglob("*")) if not p.is_symlink()}


def jsonl(docs) -> str:
    return "".join(json.dumps({"text": d}) + "\n" for d in docs)


def _truncated_jsonl_gz(root: Path, docs):
    data = gzip.compress(jsonl(docs[:300]).encode())
    (root / "a.jsonl.gz").write_bytes(data[:len(data) // 2])
    return root, [str(root / "a.jsonl.gz"), "truncated"]


def _truncated_txt_gz(root: Path, docs):
    (root / "a.txt").write_text("\n\n".join(docs[:100]))
    data = gzip.compress("\n\n".join(docs[100:400]).encode())
    (root / "b.txt.gz").write_bytes(data[:len(data) // 2])
    return root, [str(root / "b.txt.gz"), "truncated"]


def _bad_json_line(root: Path, docs):
    lines = jsonl(docs[:60]).splitlines(keepends=True)
    lines[36] = '{"text": "an unterminated string\n'
    (root / "a.jsonl").write_text("".join(lines))
    return root, [f"{root / 'a.jsonl'}:37:", "not valid JSON"]


def _dangling_symlink(root: Path, docs):
    """An unreadable corpus file that even root cannot read: its directory entry points nowhere."""
    (root / "a.txt").write_text("\n\n".join(docs[:100]))
    (root / "b.txt").symlink_to(root.parent / "gone.txt")
    return root, [str(root / "b.txt"), "cannot read"]


def _no_text(root: Path, docs):
    (root / "a.txt").write_text("\n\n   \n\n")
    (root / "b.jsonl").write_text(jsonl(["", "  ", "\n"]))
    return root, ["empty", "no non-blank text"]


def _no_corpus_files(root: Path, docs):
    (root / "notes.md").write_text(docs[0])
    return root, ["no .txt/.jsonl", str(root)]


CASES = {f.__name__[1:]: f for f in (_truncated_jsonl_gz, _truncated_txt_gz, _bad_json_line, _dangling_symlink,
                                      _no_text, _no_corpus_files)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_the_output_as_it_was(tmp_path, docs, case):
    corpus, names = CASES[case]((tmp_path / "corpus").mkdir() or tmp_path / "corpus", docs)
    parent = tmp_path / "outs"
    parent.mkdir()
    out = parent / "data"
    error_line(run_prep(corpus, out), *names)
    assert state(parent) == {}  # no output, no work directory, no temp directory
    (out / "train").mkdir(parents=True)  # a previous output, replaced only by a complete one
    (out / "manifest.json").write_text('{"previous": true}')
    (out / "train" / "tokens.npy").write_bytes(b"\x93NUMPY previous bytes")
    before = state(parent)
    error_line(run_prep(corpus, out, "--overwrite"), *names)
    assert state(parent) == before


def test_unreadable_file_permission_denied(tmp_path, docs):
    if os.geteuid() == 0:
        pytest.skip("runs as root, where chmod 000 does not stop reads (the dangling-symlink case covers "
                    "an unreadable file for root)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(docs[:100]))
    (corpus / "b.txt").write_text("\n\n".join(docs[100:200]))
    (corpus / "b.txt").chmod(0)
    try:
        error_line(run_prep(corpus, tmp_path / "outs" / "data"), str(corpus / "b.txt"), "Permission denied")
    finally:
        (corpus / "b.txt").chmod(0o644)
    assert not (tmp_path / "outs").exists() or state(tmp_path / "outs") == {}


@pytest.mark.parametrize("extra", ["--num-proc=1", "--num-proc=2", "--executor=local --tasks=2 --num-proc=2"],
                         ids=["one_process", "pool", "datatrove_local"])
def test_a_bad_line_met_while_encoding_then_fixed_input_preps(tmp_path, docs, extra):
    """The tokenizer sample reads only the files' heads, so the bad line is met by an encoding
    worker (a pool process, a datatrove task): the same one line, exit 2. After the fix a rerun
    succeeds: a task that had completed is not skipped over a work directory started afresh."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(jsonl(docs[:200]))
    lines = jsonl(docs[200:400]).splitlines(keepends=True)
    (corpus / "b.jsonl").write_text("".join(lines[:150]) + "{not json}\n" + "".join(lines[150:]))
    parent = tmp_path / "outs"
    parent.mkdir()
    opts = ("--tokenizer-sample-bytes", "2000", *extra.split())
    error_line(run_prep(corpus, parent / "data", *opts), f"{corpus / 'b.jsonl'}:151:", "not valid JSON")
    assert {p.name for p in parent.iterdir()} <= {".data.logs"}
    (corpus / "b.jsonl").write_text("".join(lines))
    r = run_prep(corpus, parent / "data", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((parent / "data" / "manifest.json").read_text())["counts"]["train"]["documents"] > 300


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_file_that_vanishes_after_planning(tmp_path, docs, monkeypatch, num_proc):
    """A real deletion between the plan (units, tokenizer) and the encoding of the units."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(4):
        (corpus / f"p{k}.txt").write_text("\n\n".join(docs[k * 100:(k + 1) * 100]))
    real = prep_module.make_plan

    def plan_then_delete(opts, work):
        plan = real(opts, work)
        (corpus / "p2.txt").unlink()
        return plan

    monkeypatch.setattr(prep_module, "make_plan", plan_then_delete)
    out = tmp_path / "outs" / "data"
    with pytest.raises(DataError, match=f"^{re.escape(str(corpus / 'p2.txt'))} vanished while prep was running$"):
        prepare(PrepOptions(source=str(corpus), out=str(out), vocab_size=300, num_proc=num_proc))
    assert not out.parent.exists() or state(out.parent) == {}


@pytest.fixture
def full_disk(tmp_path):
    """A real 200 KiB tmpfs: the prep's output does not fit."""
    with small_tmpfs(tmp_path, "200k") as mnt:
        yield mnt


def test_a_full_disk_is_one_line_and_leaves_no_partial_output(full_disk):
    out = full_disk / "data"
    line = error_line(run_prep(Path("pydoc"), out, "--vocab-size", "2000"), "No space left on device",
                      str(out), "unchanged", "partial output was removed")
    assert "Traceback" not in line and state(full_disk) == {}
    (out / "train").mkdir(parents=True)  # a previous output survives a full disk byte for byte
    (out / "manifest.json").write_text('{"previous": true}')
    before = tree_bytes(out)
    error_line(run_prep(Path("pydoc"), out, "--vocab-size", "2000", "--overwrite"), "No space left on device")
    assert tree_bytes(out) == before and sorted(p.name for p in full_disk.iterdir()) == ["data"]
