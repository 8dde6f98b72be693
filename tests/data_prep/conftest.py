"""Small generated corpora for the data-prep tests (real pydoc prose, never random bytes)."""
import bz2
import gzip
import json
import random
from pathlib import Path

import pytest

from masklab.data_prep.corpus import pydoc_documents


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return pydoc_documents()


def write_mixed_corpus(root: Path, docs: list[str]) -> Path:
    """The same prose as .txt, .jsonl.gz, .jsonl.bz2, .jsonl.zst and .parquet (row groups), in a tree."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    parts = [docs[i::5] for i in range(5)]
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("\n\n".join(parts[0]) + "\n")
    with gzip.open(root / "sub" / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in parts[1])
    with bz2.open(root / "sub" / "c.jsonl.bz2", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in parts[2])
    (root / "sub" / "deeper" / "d.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(json.dumps({"text": d}) + "\n" for d in parts[3]).encode()))
    pq.write_table(pa.table({"text": parts[4]}), root / "sub" / "e.parquet", row_group_size=50)
    return root


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory, docs) -> Path:
    return write_mixed_corpus(tmp_path_factory.mktemp("mixed"), docs[:1500])


def generated_txt(path: Path, docs: list[str], copies: int, seed: int = 0) -> Path:
    """`copies` shuffled copies of the prose as one .txt file (paragraph documents)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(copies):
            order = list(docs)
            rng.shuffle(order)
            f.write("\n\n".join(order) + "\n\n")
    return path


def tree_bytes(root: Path) -> dict:
    """{relative path: bytes} of every file under root, but the verification stamp: it records this
    machine's file mtimes (a local cache of "already hashed", not part of the data)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "verified.json"}
