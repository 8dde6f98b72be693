"""Bounded memory: `masklab prep` on a corpus 10x the smoke corpus (pydoc prose, ~465 KB) peaks at
no more than 1.3x the RSS of the 1x run (issue 16). Each prep runs in its own wrapper process, so
RUSAGE_CHILDREN's max is that prep's peak alone.

The CLI's imports alone take most of the RSS, which would hide a prep that grows with the corpus;
so the growth above that import floor (`prep --help`) is bounded too. The tokenizer sample and the
shard size are fixed below the 1x corpus, as the 1 GiB sample and 50M-token shards are below a real one.
"""
import os
import random
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
PREP = ("--vocab-size", "2000", "--tokenizer-sample-bytes", "300000", "--shard-tokens", "50000", "--num-proc", "1")


def write_corpus(root: Path, docs: list[str], copies: int, files: int) -> Path:
    """`copies` copies of the prose (each shuffled, but the first) dealt over `files` .txt files."""
    rng = random.Random(copies)
    root.mkdir()
    parts: list[list[str]] = [[] for _ in range(files)]
    for c in range(copies):
        order = list(docs)
        if c:
            rng.shuffle(order)
        for i, d in enumerate(order):
            parts[(c * len(order) + i) % files].append(d)
    for k, part in enumerate(parts):
        (root / f"part_{k}.txt").write_text("\n\n".join(part) + "\n")
    return root


def peak_rss_kb(*args: str) -> int:
    r = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "masklab.cli", "prep", *args],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


def test_peak_rss_at_10x_the_smoke_corpus_is_at_most_1_3x_that_at_1x(tmp_path, docs):
    one = write_corpus(tmp_path / "x1", docs, copies=1, files=2)
    ten = write_corpus(tmp_path / "x10", docs, copies=10, files=5)
    size = {c: sum(f.stat().st_size for f in c.iterdir()) for c in (one, ten)}
    assert size[one] > 400_000 and size[ten] >= 9.9 * size[one]
    floor = peak_rss_kb("--help")
    rss = {c: peak_rss_kb("--corpus", str(c), "--out", str(tmp_path / f"out_{c.name}"), *PREP) for c in (one, ten)}
    assert rss[ten] <= 1.3 * rss[one], (floor, rss)
    # ~6 MB above the floor at 1x; holding the 10x corpus's ~1.2M tokens as Python ints would add ~40 MB
    assert rss[ten] - floor <= 1.3 * (rss[one] - floor) + 16_000, (floor, rss)
