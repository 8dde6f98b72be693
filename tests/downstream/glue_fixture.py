"""Small GLUE directories in the official distribution layout, written by the tests themselves
(no third-party data), reproducing each task's quirks: CoLA without a header and with the
author's `*` column, MRPC's UTF-8 byte-order mark and stray `"` inside fields, STS-B's ten
columns and float scores, MNLI's 12-column train and 16-column dev files. Labels carry a simple
learnable signal (a keyword) so a fine-tuned model beats chance."""
from __future__ import annotations

import random
from pathlib import Path

from .toydata import WORDS

POS, NEG = "secret", "weather"  # keyword signal for single-sentence tasks


def _sent(rng: random.Random, key: str | None = None, n: int = 6) -> str:
    w = [rng.choice(WORDS) for _ in range(n)]
    w = [x for x in w if x not in (POS, NEG)]
    if key:
        w.insert(rng.randrange(len(w) + 1), key)
    return " ".join(w)


def _write(path: Path, rows: list[list[str]], header: list[str] | None = None, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("\ufeff" if bom else "") + "".join("\t".join(r) + "\n" for r in ([header] if header else []) + rows)
    path.write_text(text, encoding="utf-8")


def write_glue_dir(root: Path, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root = Path(root)
    for kind, n in (("train", n_train), ("dev", n_dev)):
        # CoLA: no header; source, label, author's mark ('*' for unacceptable), sentence (a stray quote)
        rows = []
        for i in range(n):
            y = i % 2
            s = _sent(rng, POS if y else NEG)
            rows.append([f"gj0{i % 5}", str(y), "" if y else "*", s + (' "' if i % 7 == 0 else "")])
        _write(root / "CoLA" / f"{kind}.tsv", rows)
        _write(root / "SST-2" / f"{kind}.tsv", [[_sent(rng, POS if i % 2 else NEG), str(i % 2)] for i in range(n)],
               ["sentence", "label"])
        # MRPC: BOM, label first; unbalanced quotes inside a field (quoting must be off)
        rows = []
        for i in range(n):
            y = i % 2
            a = _sent(rng, POS if y else NEG)
            b = _sent(rng, POS if y else NEG)
            if i % 5 == 0:
                a = '"' + a  # an opening quote never closed: a csv reader with quoting on swallows lines
            rows.append([str(y), str(1000 + i), str(2000 + i), a, b])
        _write(root / "MRPC" / f"{kind}.tsv", rows, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], bom=True)
        rows = []
        for i in range(n):
            score = round((i % 11) / 2, 3)
            key = POS if score >= 2.5 else NEG
            rows.append([str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none",
                         _sent(rng, key), _sent(rng, key), f"{score:.3f}"])
        _write(root / "STS-B" / f"{kind}.tsv", rows, ["index", "genre", "filename", "year", "old_index", "source1",
                                                      "source2", "sentence1", "sentence2", "score"])
        _write(root / "QQP" / f"{kind}.tsv",
               [[str(i), str(2 * i), str(2 * i + 1), _sent(rng, POS if i % 2 else NEG), _sent(rng, POS if i % 2 else NEG),
                 str(i % 2)] for i in range(n)], ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"])
        for task, cols in (("QNLI", ["index", "question", "sentence", "label"]),
                           ("RTE", ["index", "sentence1", "sentence2", "label"])):
            _write(root / task / f"{kind}.tsv",
                   [[str(i), _sent(rng, POS if i % 2 else NEG), _sent(rng), "not_entailment" if i % 2 else "entailment"]
                    for i in range(n)], cols)
    labels = ("entailment", "neutral", "contradiction")
    head = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    keys = (POS, NEG, None)
    rows = [[str(i), str(i), f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", _sent(rng, keys[i % 3]),
             _sent(rng), labels[i % 3], labels[i % 3]] for i in range(n_train)]
    _write(root / "MNLI" / "train.tsv", rows, head + ["label1", "gold_label"])
    for stem in ("dev_matched", "dev_mismatched"):
        rows = [[str(i), str(i), f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", _sent(rng, keys[i % 3]),
                 _sent(rng), *[labels[i % 3]] * 5, labels[i % 3]] for i in range(n_dev)]
        _write(root / "MNLI" / f"{stem}.tsv", rows, head + [f"label{k}" for k in range(1, 6)] + ["gold_label"])
    return root
