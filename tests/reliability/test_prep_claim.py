"""Issue 35 item 3: two preps into one --out. The second fails at once naming the holder, the
holder's work directory is untouched and its output verifies; a Slurm submit keeps the claim while
its jobs are queued; units encoded under another plan never reach a manifest."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masklab.cli import build_parser, main
from masklab.data_prep import executors
from masklab.data_prep.claim import claim_path
from masklab.data_prep.merge import merge
from masklab.data_prep.plan import PlanOptions, make_plan, work_dir
from masklab.errors import DataError

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]


def _corpus(d: Path, words: str) -> Path:
    d.mkdir(parents=True)
    (d / "a.txt").write_text("\n\n".join(f"{words} {i} {words[::-1]}." for i in range(200)) + "\n")
    return d


_PAUSED_PREP = """
import sys, time
from pathlib import Path
import masklab.data_prep.prep as P
real, sig = P.executors.run_pool, Path(sys.argv[3])
def paused(work, plan, n):  # plan and tokenizer are made: hold here, mid-prep
    (sig / "ready").write_text("")
    t0 = time.time()
    while not (sig / "go").exists() and time.time() - t0 < 120:
        time.sleep(0.05)
    return real(work, plan, n)
P.executors.run_pool = paused
from masklab.cli import main
sys.exit(main(["prep", "--corpus", sys.argv[1], "--out", sys.argv[2], "--vocab-size", "150"]))
"""


def test_second_prep_into_the_same_out_fails_at_once_naming_the_holder(tmp_path, capsys):
    a, b = _corpus(tmp_path / "A", "amber alpha attic"), _corpus(tmp_path / "B", "python docs module")
    out, sig = tmp_path / "data", tmp_path / "sig"
    sig.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _PAUSED_PREP, str(a), str(out), str(sig)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (sig / "ready").exists():
            assert p.poll() is None, p.communicate()
            assert time.time() - t0 < 120
            time.sleep(0.05)
        plan = (work_dir(out) / "plan.json").read_bytes()
        build_parser()  # imports every stage: what follows times the refusal, not the imports
        t1 = time.time()
        rc = main(["prep", "--corpus", str(b), "--out", str(out), "--vocab-size", "150", "--overwrite"])
        err = capsys.readouterr().err
        assert rc == 2 and "another `masklab prep` is writing" in err and f"pid {p.pid}" in err, err
        assert time.time() - t1 < 5 and len(err.strip().splitlines()) == 1
        assert (work_dir(out) / "plan.json").read_bytes() == plan  # the holder's plan was not replaced
        (sig / "go").write_text("")
        _, perr = p.communicate(timeout=120)
        assert p.returncode == 0, perr[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"] == str(a) and m["corpus_fingerprint"]
    assert all(e["tokenizer_sha256"] == m["tokenizer_file_sha256"] for e in m["splits"]["train"])
    assert main(["verify", str(out)]) == 0
    assert not claim_path(out).exists() and not work_dir(out).exists()
    rc = main(["prep", "--corpus", str(b), "--out", str(out), "--vocab-size", "150", "--overwrite"])
    assert rc == 0  # once the holder is done, the next prep runs


_SUBMITTED = """
import os, sys
from pathlib import Path
from masklab.data_prep.claim import PrepClaim
c = PrepClaim(Path(sys.argv[1]))
c.acquire()
c.record_slurm(["4242", "4243"])
os._exit(0)  # the submitting process exits, as `prep --executor slurm` without --wait does
"""


def test_a_slurm_submit_holds_the_claim_while_its_jobs_are_queued(tmp_path, capsys, monkeypatch):
    corpus, out = _corpus(tmp_path / "A", "amber alpha attic"), tmp_path / "data"
    r = subprocess.run([sys.executable, "-c", _SUBMITTED, str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    fake = tmp_path / "bin"
    fake.mkdir()
    queued = tmp_path / "queued"
    (fake / "squeue").write_text(f"#!/bin/sh\n[ -f {queued} ] && echo 4243_7\nexit 0\n")
    (fake / "squeue").chmod(0o755)
    argv = ["prep", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "150"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no squeue here: cannot tell, so refuse
    assert main(argv) == 2 and "cannot be checked here" in capsys.readouterr().err
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    queued.write_text("")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "still in the Slurm queue (4243)" in err and str(claim_path(out)) in err, err
    assert not work_dir(out).exists()
    queued.unlink()  # the jobs have left the queue
    assert main(argv) == 0 and not claim_path(out).exists()


def test_units_encoded_under_another_tokenizer_never_reach_a_manifest(tmp_path):
    corpus, out = _corpus(tmp_path / "A", "amber alpha attic"), tmp_path / "data"
    opts = PlanOptions(source=str(corpus), text_column="text", tokenizer=None, tokenizer_kind="wordpiece",
                       vocab_size=150, lowercase=True, validation_fraction=0.05, cjk_segmenter=None,
                       shard_tokens=10**6, chunk_bytes=1 << 20, tokenizer_sample_bytes=1 << 20, seed=0,
                       max_documents=None)
    work = work_dir(out)
    plan = make_plan(opts, work)
    executors.run_pool(work, plan, 1)
    rec = work / "units" / "u_000000.json"
    r = json.loads(rec.read_text())
    rec.write_text(json.dumps({**r, "tokenizer_sha256": "f" * 64}))  # as a second prep's tokenizer left it
    with pytest.raises(DataError, match="unit 0 .* another tokenizer or corpus"):
        merge(work, out)
    assert not out.exists()
