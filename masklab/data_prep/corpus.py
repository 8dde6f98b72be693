"""Text-level helpers shared by the readers: paragraph documents and the built-in pydoc corpus.

A .txt document is a paragraph: lines up to a blank line, joined by single spaces. `pydoc`
is the prose of the standard library's `pydoc_data.topics`, available on every Python.
The streaming readers of files, byte ranges and hub datasets live in `data_prep/sources.py`.
"""
from __future__ import annotations

from typing import Iterable, Iterator


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
    buf: list[str] = []
    for line in lines:
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

    return [d for key in sorted(topics.topics) for d in paragraphs(topics.topics[key].splitlines())]
