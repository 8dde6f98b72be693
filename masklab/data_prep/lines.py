"""Reading corpus lines in bounded memory: a line is read in pieces of at most `max_bytes`, and a
line or document longer than that is skipped (drained in 1 MiB reads) and counted, never held.

A 4.6 MB .txt.gz can unpack to one 1 GiB line; `for line in fh` read it whole (4.6 GB of RSS
before the tokenizer died). Here the peak per reader is about `max_bytes` (`--max-document-bytes`,
default 8 MiB), whatever the file holds (tests/reliability/test_hostile_files.py measures it).
"""
from __future__ import annotations

import bz2
import gzip
import io
from dataclasses import dataclass
from typing import Iterator, Optional

from masklab.errors import DataError

COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".zst": None}  # zstandard is opened lazily
MAX_DOCUMENT_BYTES = 8 << 20  # longer documents (paragraphs, JSON lines, parquet cells) are skipped
_DRAIN = 1 << 20  # the rest of an over-long line is skipped in reads of this size


@dataclass
class ReadStats:
    documents: int = 0
    bytes: int = 0
    invalid_utf8_lines: int = 0
    overlong_documents: int = 0  # documents (or lines) over max_document_bytes, skipped


def skip_line(fh) -> tuple[bool, bool]:
    """Move past the current line in bounded reads (a line may be 1 GiB); -> (blank, read anything)."""
    raw = fh.readline(_DRAIN)
    first, blank = raw, True
    while raw:
        blank = blank and not raw.strip()
        if raw.endswith(b"\n"):
            break
        raw = fh.readline(_DRAIN)
    return blank and bool(first), bool(first)


def open_binary(u):
    """The piece's file (a sources.Piece: path, compression), opened for binary reads."""
    if u.compression == ".zst":
        import zstandard

        # the raw reader cannot iterate lines; a buffered wrapper can
        return io.BufferedReader(zstandard.open(u.path, "rb"))
    return COMPRESSED[u.compression](u.path, "rb") if u.compression else open(u.path, "rb")


def read_lines(u, stats: ReadStats, max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[tuple[int, Optional[str]]]:
    """-> (1-based line number within the piece, decoded line); invalid UTF-8 lines skipped and
    counted; a line over `max_bytes` is never held: it is skipped in bounded reads and given as None."""
    try:
        fh = open_binary(u)
    except FileNotFoundError:
        raise DataError(f"{u.path} vanished while prep was running") from None
    except OSError as e:
        raise DataError(f"cannot read {u.path}: {e.strerror or e}") from None
    pos = u.start
    try:
        with fh:
            if u.start:
                fh.seek(u.start)
            n = 0
            while True:
                raw = fh.readline(max_bytes + 1)  # bounded: never more than max_bytes + 1 bytes
                if not raw:
                    break
                n += 1
                pos += len(raw)
                stats.bytes += len(raw)
                if len(raw) > max_bytes and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):  # drain the rest of the line
                        raw = fh.readline(_DRAIN)
                        pos += len(raw)
                        stats.bytes += len(raw)
                    yield n, None
                else:
                    try:
                        yield n, raw.decode("utf-8")
                    except UnicodeDecodeError:
                        stats.invalid_utf8_lines += 1
                if u.end >= 0 and pos >= u.end:
                    break
    except (EOFError, gzip.BadGzipFile, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{u.path} vanished while prep was running") from None
        what = f"compressed ({u.compression}) " if u.compression else ""
        raise DataError(f"cannot read {what}file {u.path}: truncated or corrupt ({e})") from None
    except Exception as e:  # zstandard raises its own ZstdError
        if type(e).__name__ == "ZstdError":
            raise DataError(f"cannot read compressed (.zst) file {u.path}: truncated or corrupt ({e})") from None
        raise


def bounded_paragraphs(lines: Iterator[tuple[int, Optional[str]]], max_bytes: int, stats: ReadStats) -> Iterator[str]:
    """corpus.paragraphs with a size cap: a paragraph over `max_bytes` (or holding an over-long
    line) is dropped as it is read, never joined, and counted."""
    buf: list[str] = []
    size, over = 0, False
    for _, line in lines:
        if line is None:
            over, buf, size = True, [], 0
            continue
        line = line.strip()
        if line:
            if not over:
                buf.append(line)
                size += len(line) + 1
                if size > max_bytes:
                    over, buf, size = True, [], 0
        else:
            if over:
                stats.overlong_documents += 1
            elif buf:
                yield " ".join(buf)
            buf, size, over = [], 0, False
    if over:
        stats.overlong_documents += 1
    elif buf:
        yield " ".join(buf)
