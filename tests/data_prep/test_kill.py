"""A `masklab prep` killed (SIGKILL) mid-run: the output directory does not exist, the rerun of the
same command resumes the plan, encodes only the missing units, and writes the bytes of an
uninterrupted run (issue 16)."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from masklab.data_prep import PrepOptions, prepare
from tests.data_prep.conftest import tree_bytes

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
OPTS = dict(vocab_size=1500, chunk_bytes=20_000, shard_tokens=5_000)
pytestmark = pytest.mark.reliability
FLAGS = ["--vocab-size", "1500", "--chunk-bytes", "20000", "--shard-tokens", "5000", "--num-proc", "1"]


def test_a_killed_prep_is_finished_by_a_rerun_with_the_bytes_of_an_uninterrupted_one(tmp_path, docs):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(docs) + "\n")
    ref = tmp_path / "ref" / "data"
    prepare(PrepOptions(source=str(corpus), out=str(ref), **OPTS))
    out = tmp_path / "outs" / "data"
    records = out.parent / ".data.partial" / "units"
    cmd = [sys.executable, "-m", "masklab.cli", "prep", "--corpus", str(corpus), "--out", str(out), *FLAGS]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        t0 = time.time()
        while not (records.is_dir() and any(records.glob("u_*.json"))) and p.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGSTOP)  # frozen mid-run: count what it finished, then kill it
        done = len(list(records.glob("u_*.json")))
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"resuming the unfinished prep in \S+ \((\d+) of (\d+) units done\)", r.stderr)
    assert m, r.stderr[-3000:]
    assert int(m[1]) >= done >= 1 and int(m[1]) < int(m[2])  # killed mid-run; finished units are kept
    assert tree_bytes(out) == tree_bytes(ref)
    assert sorted(p.name for p in out.parent.iterdir()) == ["data"]
