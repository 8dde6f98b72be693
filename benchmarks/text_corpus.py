"""Text corpora of any size for the prep benchmarks: the real text found on this machine once,
then a word-bigram Markov chain trained on it for the volume.

Real text (each used when present; `sources()` says which were found):
- Debian python3.11-doc: the reST sources of the Python docs (~12 MB), paragraph = blank-line block;
- Debian debian-handbook, en-US: the HTML's paragraphs (`downstream.carriers.html_paragraphs`);
- pydoc_data.topics (always there, ~0.5 MB).
Paragraphs under 40 characters (headings, markup lines) are dropped.

The generator: words are whitespace-separated strings of the real paragraphs. 1024 chains walk
the word-bigram graph side by side (numpy, one step for all chains at a time): each starts at a
real paragraph's first word and moves to a successor of its current word drawn uniformly among
those recorded (a word seen only at paragraph ends restarts at a first word). The walks are laid
end to end and cut into paragraphs whose word counts are drawn from the real ones. Real words and
local word order keep the tokenizer's work realistic (the same vocabulary, the same word-length
mix); repeating the real text instead would let page cache and tokenizer caches flatter the
larger sizes. ~70 MB/s here. Counter-based: (seed, size) fixes the corpus, and with one seed a
smaller corpus is a prefix of a larger one.

Output: ~1 MB .txt files of blank-line-separated paragraphs (prep's .txt document format) and a
`COMPLETE` marker recording (size, seed, version); a directory with a matching marker is reused.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

PYDOCS = Path("/usr/share/doc/python3.11/html/_sources")
VERSION = 1
FILE_BYTES = 1 << 20
MIN_CHARS = 40


def _blocks(text: str) -> list[str]:
    return [" ".join(b.split()) for b in text.split("\n\n")]


def real_paragraphs() -> tuple[list[str], dict]:
    """-> (paragraphs, {source: MB}) of every real text found."""
    from masklab.data_prep.corpus import pydoc_documents
    from masklab.downstream.data.carriers import HANDBOOK, html_paragraphs

    found: dict[str, list[str]] = {}
    if PYDOCS.is_dir():
        found["python3.11-doc"] = [p for f in sorted(PYDOCS.rglob("*.rst.txt"))
                                   for p in _blocks(f.read_text(encoding="utf-8", errors="replace"))]
    if (HANDBOOK / "en-US").is_dir():
        found["debian-handbook en-US"] = [p for f in sorted((HANDBOOK / "en-US").glob("*.html"))
                                          for p in html_paragraphs(f)]
    found["pydoc_data.topics"] = [" ".join(d.split()) for d in pydoc_documents()]
    paras = [p for v in found.values() for p in v if len(p) >= MIN_CHARS]
    return paras, {k: sum(len(p.encode()) + 2 for p in v if len(p) >= MIN_CHARS) / 1e6 for k, v in found.items()}


class WordBigramText:
    """The generator (see module doc), fitted on a list of paragraphs."""

    CHAINS = 1024

    def __init__(self, paragraphs: list[str]):
        index: dict[str, int] = {}
        ids, lens = [], []
        for p in paragraphs:
            ws = p.split()
            ids.extend(index.setdefault(w, len(index)) for w in ws)
            lens.append(len(ws))
        wid, lens = np.asarray(ids, np.int64), np.asarray([n for n in lens if n], np.int64)
        self.vocab = np.asarray(list(index), dtype=object)
        self.lengths = lens
        ends = np.cumsum(lens)
        self.first = wid[ends - lens]
        last = np.zeros(len(wid), bool)
        last[ends - 1] = True
        prev, nxt = wid[:-1][~last[:-1]], wid[1:][~last[:-1]]
        self.succ = nxt[np.argsort(prev, kind="stable")]
        self.count = np.bincount(prev, minlength=len(index))
        self.start = np.r_[0, np.cumsum(self.count)[:-1]]
        self.bytes_per_word = (sum(len(p.encode()) for p in paragraphs) + len(paragraphs)) / max(len(wid), 1)

    def _walk(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """-> word ids [CHAINS * steps] int64: CHAINS independent walks of `steps` words, end to end."""
        cur = rng.choice(self.first, self.CHAINS)
        out = np.empty((steps, self.CHAINS), np.int64)
        for t in range(steps):
            out[t] = cur
            c = self.count[cur]
            pick = self.succ[np.minimum(self.start[cur] + (rng.random(self.CHAINS) * c).astype(np.int64),
                                        len(self.succ) - 1)]
            cur = np.where(c > 0, pick, rng.choice(self.first, self.CHAINS))
        return out.T.reshape(-1)

    def paragraphs(self, rng: np.random.Generator, n_bytes: int) -> list[str]:
        """Generated paragraphs of about `n_bytes` UTF-8 bytes in all (blank-line separators counted)."""
        ids = self._walk(rng, int(n_bytes / self.bytes_per_word / self.CHAINS) + 1)
        lens = rng.choice(self.lengths, len(ids) // int(self.lengths.min()) + 1)
        bounds = np.cumsum(lens)
        bounds = np.r_[0, bounds[bounds <= len(ids)]]
        words = self.vocab[ids].tolist()
        return [" ".join(words[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def write_corpus(dest: Path, mb: float, seed: int = 0, model: WordBigramText | None = None,
                 real: list[str] | None = None) -> Path:
    """The real paragraphs once, then generated ones, up to `mb` MB, as ~1 MB .txt files."""
    marker = {"mb": mb, "seed": seed, "version": VERSION}
    if (dest / "COMPLETE").is_file() and json.loads((dest / "COMPLETE").read_text()) == marker:
        return dest
    if real is None:
        real, _ = real_paragraphs()
    model = model or WordBigramText(real)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    target, written, n, buf, size = int(mb * 1e6), 0, 0, [], 0
    rng = np.random.Generator(np.random.Philox(key=seed))

    def batches():
        yield real
        while True:
            yield model.paragraphs(rng, FILE_BYTES)

    for batch in batches():
        for p in batch:
            buf.append(p)
            size += len(p.encode()) + 2
            if size >= FILE_BYTES or written + size >= target:
                (dest / f"part{n:05d}.txt").write_text("\n\n".join(buf) + "\n")
                written, n, buf, size = written + size, n + 1, [], 0
                if written >= target:
                    (dest / "COMPLETE").write_text(json.dumps(marker))
                    return dest
    raise AssertionError("unreachable")
