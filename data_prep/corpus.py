"""Raw text readers -> a `datasets.Dataset` with one document per row (column `text`).

Sources:
- `pydoc` (default): the prose of the standard library's `pydoc_data.topics`, on every Python.
- a directory or file of .txt / .jsonl / .json / .parquet (a txt document is a paragraph:
  lines up to a blank line; jsonl/parquet rows take `text_column`);
- a `datasets` hub name (only when online).

Invalid UTF-8 lines in .txt files are skipped and counted (logged), not fatal: a crawl with
a few broken bytes is normal input. An input with no text at all is an error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import datasets

from masklab.errors import DataError

log = logging.getLogger("masklab.data_prep")
TEXT_EXT = (".txt",)
JSON_EXT = (".jsonl", ".json")
PARQUET_EXT = (".parquet",)


@dataclass
class ReadStats:
    files: int = 0
    documents: int = 0
    invalid_utf8_lines: int = 0


def _paragraphs(text: str) -> Iterator[str]:
    buf: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            buf.append(line)
        elif buf:
            yield " ".join(buf)
            buf = []
    if buf:
        yield " ".join(buf)


def pydoc_documents() -> list[str]:
    from pydoc_data import topics

    docs = []
    for key in sorted(topics.topics):
        docs.extend(_paragraphs(topics.topics[key]))
    return docs


def _read_txt(path: Path, stats: ReadStats) -> Iterator[str]:
    good: list[str] = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                good.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                stats.invalid_utf8_lines += 1
    yield from _paragraphs("".join(good))


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    exts = TEXT_EXT + JSON_EXT + PARQUET_EXT
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def read_corpus(source: str = "pydoc", text_column: str = "text", max_documents: Optional[int] = None,
                stats: Optional[ReadStats] = None) -> datasets.Dataset:
    """-> Dataset with a single `text` column, empty documents dropped."""
    stats = stats if stats is not None else ReadStats()
    if source == "pydoc":
        docs = pydoc_documents()
        stats.files = 1
        ds = datasets.Dataset.from_dict({"text": docs})
    elif os.path.exists(source):
        files = _files(Path(source))
        if not files:
            raise DataError(f"no .txt/.jsonl/.parquet files under {source}")
        stats.files = len(files)
        kinds = {p.suffix.lower() for p in files}
        parts = []
        txt = [p for p in files if p.suffix.lower() in TEXT_EXT]
        if txt:
            docs = [d for p in txt for d in _read_txt(p, stats)]
            parts.append(datasets.Dataset.from_dict({"text": docs}))
        for exts, builder in ((JSON_EXT, "json"), (PARQUET_EXT, "parquet")):
            fs = [str(p) for p in files if p.suffix.lower() in exts]
            if not fs:
                continue
            if all(os.path.getsize(f) == 0 for f in fs):
                continue
            try:
                part = datasets.load_dataset(builder, data_files=fs, split="train")
            except Exception as e:
                raise DataError(f"cannot read {builder} files under {source}: {e}") from None
            if text_column not in part.column_names:
                raise DataError(f"{builder} data under {source} has no column '{text_column}' "
                                f"(columns: {', '.join(part.column_names)}); pass --text-column")
            parts.append(part.select_columns([text_column]).rename_column(text_column, "text")
                         if text_column != "text" else part.select_columns(["text"]))
        if not parts:
            raise DataError(f"corpus {source} is empty (files: {', '.join(sorted(kinds))})")
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    else:
        try:
            ds = datasets.load_dataset(source, split="train")
        except Exception as e:
            raise DataError(f"corpus '{source}' is neither a local path nor a loadable `datasets` name: {e}") from None
        if text_column not in ds.column_names:
            raise DataError(f"dataset {source} has no column '{text_column}' (columns: {', '.join(ds.column_names)})")
        ds = ds.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" else ds.select_columns(["text"])
    ds = ds.filter(lambda b: [isinstance(t, str) and t.strip() != "" for t in b["text"]], batched=True)
    if max_documents is not None:
        ds = ds.select(range(min(max_documents, len(ds))))
    stats.documents = len(ds)
    if stats.invalid_utf8_lines:
        log.warning("skipped %d line(s) with invalid UTF-8 in %s", stats.invalid_utf8_lines, source)
    if len(ds) == 0:
        raise DataError(f"corpus {source} is empty: no non-blank text found")
    return ds
