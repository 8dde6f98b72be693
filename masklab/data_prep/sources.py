"""The corpus as a fixed list of work units, each read as a stream of documents.

A piece is a whole file, a byte range of a large uncompressed .txt/.jsonl file (cut at a
paragraph / line boundary), a parquet row-group range, a shard of a streamed hub dataset, or
the built-in pydoc prose. A work unit is a run of consecutive pieces: a large piece alone, or
small files grouped up to `chunk_bytes / GROUP_DIVISOR`, so the number of units (and of shards,
unit records and manifest entries) grows with the corpus bytes, not with its file count. Both
lists depend only on the corpus and `chunk_bytes`, never on the number of processes or tasks,
so every parallel setting writes the same shards in the same order. Memory per reader is one
line / one parquet batch, whatever the file size, and a line is read in pieces of at most
`max_document_bytes` (documents over it are skipped with a count), so a compression bomb of one
1 GiB line costs a few MB.

Formats: .txt (a document is a paragraph: lines up to a blank line), .jsonl/.json (JSON lines,
documents in `text_column`), .parquet; .gz/.bz2/.zst compressed forms of .txt/.jsonl/.json.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from masklab.data_prep.corpus import pydoc_documents
from masklab.data_prep.lines import (COMPRESSED, MAX_DOCUMENT_BYTES, ReadStats, bounded_paragraphs, read_lines,
                                     skip_line)
from masklab.errors import DataError

TEXT_EXT = (".txt",)
JSON_EXT = (".jsonl", ".json")
PARQUET_EXT = (".parquet",)


# Groups of small files are smaller than a split piece so that a few-GB corpus of small files
# still has tens of units to spread over processes (the last unit decides the wall time).
GROUP_DIVISOR = 8


@dataclass(frozen=True)
class Piece:
    kind: str  # "txt" | "json" | "parquet" | "hub" | "pydoc"
    path: str
    compression: str = ""  # "" | ".gz" | ".bz2" | ".zst"
    start: int = 0  # byte offset (txt/json), first row group (parquet), shard index (hub)
    end: int = -1  # exclusive; -1 = to the end
    size: int = 0  # bytes this piece covers (progress, sample budget)

    def to_dict(self) -> dict:
        return asdict(self)


def _kind(p: Path) -> tuple[str, str] | None:
    suf = [s.lower() for s in p.suffixes[-2:]]
    comp = suf[-1] if suf and suf[-1] in COMPRESSED else ""
    ext = (suf[-2] if len(suf) > 1 else "") if comp else (suf[-1] if suf else "")
    if ext in TEXT_EXT:
        return "txt", comp
    if ext in JSON_EXT:
        return "json", comp
    if ext in PARQUET_EXT and not comp:
        return "parquet", ""
    return None


def corpus_files(root: Path) -> list[Path]:
    """The corpus files under `root`, sorted; a dangling symlink with a corpus name counts (and is
    reported as unreadable by `plan_pieces`) rather than being silently left out."""
    if root.is_file():
        return [root] if _kind(root) else []
    return sorted(p for p in root.rglob("*") if (p.is_file() or (p.is_symlink() and not p.exists())) and _kind(p))


def plan_pieces(source: str, chunk_bytes: int) -> list[Piece]:
    """-> the corpus's pieces in corpus order (files sorted by path, ranges by offset)."""
    if source == "pydoc":
        return [Piece("pydoc", "pydoc")]
    if not os.path.exists(source):
        return _hub_pieces(source)
    files = corpus_files(Path(source))
    if not files:
        raise DataError(f"no .txt/.jsonl/.json/.parquet files (or their .gz/.bz2/.zst forms) under {source}")
    pieces: list[Piece] = []
    for f in files:
        kind, comp = _kind(f)
        try:
            size = f.stat().st_size
        except OSError as e:
            why = f"a dangling symlink to {os.readlink(f)}" if f.is_symlink() else e.strerror
            raise DataError(f"cannot read {f}: {why}") from None
        if kind == "parquet":
            pieces.extend(_parquet_pieces(f, size, chunk_bytes))
        elif comp or size <= chunk_bytes:
            pieces.append(Piece(kind, str(f), comp, 0, -1, size))
        else:
            cuts = _cut_points(f, size, chunk_bytes, paragraph=kind == "txt")
            pieces.extend(Piece(kind, str(f), "", a, b, b - a) for a, b in zip(cuts[:-1], cuts[1:]) if b > a)
    return pieces


def group_pieces(pieces: list[Piece], chunk_bytes: int) -> list[list[Piece]]:
    """-> the work units: consecutive local files smaller than `chunk_bytes / GROUP_DIVISOR`
    share a unit up to that size; every other piece (a split range, a large or compressed file
    above it, a hub shard, pydoc) is a unit of its own."""
    limit = max(chunk_bytes // GROUP_DIVISOR, 1)
    units: list[list[Piece]] = []
    acc, grouping = 0, False  # grouping: the last unit is a group of small files
    for p in pieces:
        small = p.kind in ("txt", "json", "parquet") and p.size < limit
        if small and grouping and acc + p.size <= limit:
            units[-1].append(p)
            acc += p.size
        else:
            units.append([p])
            acc, grouping = p.size, small
    return units


def _cut_points(f: Path, size: int, chunk: int, paragraph: bool) -> list[int]:
    """Byte offsets [0, ..., size] near multiples of `chunk`, each at the start of a line
    (json) or of a line following a blank line (txt: a paragraph start)."""
    cuts = [0]
    with open(f, "rb") as fh:
        for target in range(chunk, size, chunk):
            fh.seek(max(target, cuts[-1]))
            skip_line(fh)  # to the next line start
            while paragraph:
                blank, more = skip_line(fh)
                if not more or blank:
                    break
            cuts.append(min(fh.tell(), size))
    cuts.append(size)
    return sorted(set(cuts))


def _parquet_pieces(f: Path, size: int, chunk: int) -> list[Piece]:
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(f).metadata
    except Exception as e:
        raise DataError(f"cannot read parquet file {f}: {e}") from None
    pieces, first, acc = [], 0, 0
    for g in range(md.num_row_groups):
        acc += md.row_group(g).total_byte_size
        if acc >= chunk or g == md.num_row_groups - 1:
            pieces.append(Piece("parquet", str(f), "", first, g + 1, acc))
            first, acc = g + 1, 0
    return pieces or [Piece("parquet", str(f), "", 0, 0, size)]


def _hub_pieces(name: str) -> list[Piece]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train", streaming=True)
    except Exception as e:
        raise DataError(f"corpus '{name}' is neither a local path nor a loadable `datasets` name: {e}") from None
    return [Piece("hub", name, "", i, i + 1) for i in range(ds.num_shards)]


def _json_docs(u: Piece, column: str, stats: ReadStats, max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[str]:
    first_line = _first_line_number(u)
    for n, line in read_lines(u, stats, max_bytes):
        if line is None:
            stats.overlong_documents += 1
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            where = e.msg if e.msg.endswith(" at") else e.msg + " at"  # json's msgs expect a position
            raise DataError(f"{u.path}:{first_line + n - 1}: not valid JSON lines ({where} column {e.colno})") from None
        if not isinstance(row, dict) or column not in row:
            cols = ", ".join(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{u.path}:{first_line + n - 1}: no column '{column}' (has: {cols}); pass --text-column")
        yield row[column]


def _first_line_number(u: Piece) -> int:
    """Line number of the piece's first line in its file (error messages name real lines)."""
    if not u.start:
        return 1
    with open(u.path, "rb") as fh:
        n, left = 1, u.start
        while left > 0:
            block = fh.read(min(left, 1 << 24))
            n, left = n + block.count(b"\n"), left - len(block)
    return n


def _parquet_docs(u: Piece, column: str, stats: ReadStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(u.path)
    except FileNotFoundError:
        raise DataError(f"{u.path} vanished while prep was running") from None
    if column not in pf.schema_arrow.names:
        raise DataError(f"{u.path}: no column '{column}' (columns: {', '.join(pf.schema_arrow.names)}); "
                        "pass --text-column")
    stats.bytes += u.size
    for batch in pf.iter_batches(batch_size=1024, row_groups=range(u.start, u.end), columns=[column]):
        yield from batch.column(0).to_pylist()


def _hub_docs(u: Piece, column: str) -> Iterator[str]:
    import datasets

    ds = datasets.load_dataset(u.path, split="train", streaming=True)
    ds = ds.shard(num_shards=ds.num_shards, index=u.start)
    for row in ds:
        if column not in row:
            raise DataError(f"dataset {u.path} has no column '{column}' (columns: {', '.join(row)})")
        yield row[column]


def documents(u: Piece, text_column: str = "text", stats: Optional[ReadStats] = None,
              max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[str]:
    """-> the piece's non-blank documents of at most `max_bytes` (UTF-8), in order; longer ones
    are skipped and counted in stats.overlong_documents."""
    stats = stats if stats is not None else ReadStats()
    if u.kind == "pydoc":
        it = iter(pydoc_documents())
    elif u.kind == "txt":
        it = bounded_paragraphs(read_lines(u, stats, max_bytes), max_bytes, stats)
    elif u.kind == "json":
        it = _json_docs(u, text_column, stats, max_bytes)
    elif u.kind == "parquet":
        it = _parquet_docs(u, text_column, stats)
    else:
        it = _hub_docs(u, text_column)
    for doc in it:
        if isinstance(doc, str) and doc.strip():
            if u.kind in ("parquet", "hub", "pydoc") and len(doc) > max_bytes // 4 and len(doc.encode()) > max_bytes:
                stats.overlong_documents += 1
                continue
            stats.documents += 1
            if u.kind in ("pydoc", "hub"):
                stats.bytes += len(doc.encode())
            yield doc


def unit_documents(unit: list[Piece], text_column: str = "text", stats: Optional[ReadStats] = None,
                   max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[str]:
    """-> the work unit's non-blank documents, piece after piece."""
    stats = stats if stats is not None else ReadStats()
    for piece in unit:
        yield from documents(piece, text_column, stats, max_bytes)


def fingerprint(pieces: list[Piece]) -> list[list]:
    """(path, size, mtime) of every local file: a rerun resumes only on the same corpus."""
    out = []
    for p in sorted({u.path for u in pieces if u.kind not in ("pydoc", "hub")}):
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"cannot read {p}: {e.strerror}") from None
        out.append([p, st.st_size, st.st_mtime_ns])
    return out

