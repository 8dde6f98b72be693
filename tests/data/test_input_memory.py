"""Training input memory at 10x the smoke data set (issue 17): no growth beyond the mapped files.

Two prepared data sets of real text with one WordPiece tokenizer (vocab 2000): 1x = the smoke
corpus (`masklab prep --corpus pydoc`, all pydoc_data.topics paragraphs), 10x = ten shuffled
copies of those paragraphs written as .txt files, prepared with the 1x tokenizer. For each size
and packing mode a fresh subprocess (benchmarks/input_memory.py) opens the training input as
`train()` does (run_state.setup: shards, memory-mapped sample index built by the rank, Collator,
step budget; step_loader with num_workers=2) and iterates 40 steps of 32 units, sampling
/proc/<pid>/status of the rank and of both DataLoader workers after every step.

What is compared is RssAnon (anonymous resident memory: heap, Python objects, arrays), not
VmRSS / VmHWM: pages of the memory-mapped shards and sample index are file-backed and count in
the total RSS as they are touched, which is the page cache's business, not a copy held by the
process. "No growth beyond the mapped files" = RssAnon at 10x <= 1.3x RssAnon at 1x (+ 20 MB
slack for allocator noise), for the rank and for each worker. As ~225 MB of that is the interpreter,
torch and the fork-shared pages (the same at both sizes), the test also bounds the growth itself:
at most GROWTH_MB from 1x to 10x, less than half of what one int64 copy of the 10x train tokens
would add (checked), so a copy of the token data or of the sample index in any process fails.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1, 10)
GROWTH_MB = 4.0  # measured: < 0.5 MB


@pytest.fixture(scope="module")
def scaled_data(tmp_path_factory) -> dict:
    from masklab.data_prep import PrepOptions, prepare
    from masklab.data_prep.corpus import pydoc_documents

    root = tmp_path_factory.mktemp("input_memory")
    prepare(PrepOptions(source="pydoc", out=str(root / "x1"), vocab_size=2000))
    docs, rng, txt = pydoc_documents(), random.Random(0), root / "txt10"
    txt.mkdir()
    for k in range(10):
        order = docs[:]
        rng.shuffle(order)
        (txt / f"copy{k:02d}.txt").write_text("\n\n".join(order) + "\n")
    prepare(PrepOptions(source=str(txt), out=str(root / "x10"),
                        tokenizer=str(root / "x1" / "tokenizer" / "tokenizer.json")))
    return {1: root / "x1", 10: root / "x10"}


def _measure(data: Path, packing: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.input_memory", "--child", "--data", str(data),
                        "--packing", packing, "--workers", "2", "--steps", "40",
                        "--run", str(data.parent / f"run_{data.name}_{packing}")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("packing", ["none", "docs", "concat"])
def test_rank_and_worker_anonymous_rss_do_not_grow_with_10x_data(scaled_data, packing):
    from masklab.data_prep.shards import ShardSet

    tokens = {n: ShardSet(scaled_data[n], "train").num_tokens for n in SIZES}
    assert tokens[10] >= 9 * tokens[1]  # really 10x the data
    assert tokens[10] * 8 / 2**20 > 2 * GROWTH_MB  # an int64 copy of the tokens would break the growth bound
    m = {n: _measure(scaled_data[n], packing) for n in SIZES}
    assert m[10]["units"] >= 9 * m[1]["units"]
    for n in SIZES:
        assert len(m[n]["workers"]) == 2 and m[n]["tokens"] > 0, m[n]
        assert all(w.get("anon", 0) > 0 for w in [m[n]["rank"], *m[n]["workers"]]), m[n]

    def bound(mb):
        return 1.3 * mb + 20

    small, big = m[1], m[10]
    report = json.dumps({n: {"rank": m[n]["rank"], "workers": m[n]["workers"]} for n in SIZES})
    for s, b in zip([small["rank"], *small["workers"]], [big["rank"], *big["workers"]]):
        assert b["anon"] <= bound(s["anon"]), report
        assert b["anon"] - s["anon"] <= GROWTH_MB, report
