"""The benchmark corpus generator: real text first, then word-bigram text; deterministic; bounded files."""
import numpy as np

from benchmarks.text_corpus import FILE_BYTES, WordBigramText, write_corpus
from masklab.data_prep.corpus import paragraphs, pydoc_documents


def _text(d):
    return "".join(f.read_text() for f in sorted(d.glob("*.txt")))


def test_corpus_size_files_and_prefix(tmp_path):
    real = [" ".join(p.split()) for p in pydoc_documents()]
    small = write_corpus(tmp_path / "a", 1.5, seed=3, real=real)
    big = write_corpus(tmp_path / "b", 3.0, seed=3, real=real)
    sizes = [f.stat().st_size for f in sorted(big.glob("*.txt"))]
    assert all(s <= FILE_BYTES + 64 * 1024 for s in sizes) and 2.9e6 <= sum(sizes) <= 3.2e6
    a, b = _text(small), _text(big)
    # one seed: the smaller corpus is the larger one's prefix (up to its last file's cut)
    assert b.startswith(a.rsplit("\n\n", 2)[0])
    docs = list(paragraphs(b.splitlines()))
    assert docs[:len(real)] == real and len(docs) > 2 * len(real)
    gen_words = {w for d in docs[len(real):] for w in d.split()}
    assert gen_words <= {w for d in real for w in d.split()}  # real words only, never random bytes
    assert write_corpus(tmp_path / "b", 3.0, seed=3, real=real) == big and _text(big) == b  # reused via marker
    other = write_corpus(tmp_path / "c", 3.0, seed=4, real=real)
    assert _text(other) != b


def test_bigram_walk_follows_recorded_successors():
    model = WordBigramText(["a b c d", "b c e", "x y"])
    rng = np.random.Generator(np.random.Philox(key=0))
    pairs = {("a", "b"), ("b", "c"), ("c", "d"), ("c", "e"), ("x", "y")}
    walks = model.vocab[model._walk(rng, 16).reshape(model.CHAINS, 16)]
    assert set(walks[:, 0]) <= {"a", "b", "x"}
    for ws in walks:
        for u, v in zip(ws, ws[1:]):
            # a dead end (d, e, y) restarts at a first word (a, b, x)
            assert (u, v) in pairs or (u in "dey" and v in "abx"), (u, v)
    assert {w for p in model.paragraphs(rng, 4096) for w in p.split()} <= set("abcdexy")
