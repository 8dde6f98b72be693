"""Document carriers: prompts placed inside long benign documents, the way indirect injections
reach a model (a retrieved web page, a tool's output, an e-mail).

A detector trained on bare prompts meets them inside documents at test time; the carrier text
around an injection shifts a pooled embedding and pushes it past a truncation window. Two uses:
- augmentation: `finetune --augment-carriers SOURCE` adds carried copies of every training and
  validation row (after the split, so no row leaks across it) plus plain benign documents;
- evaluation: `masklab carry` writes a labelled file of carried prompts for a test set.

Carrier sources (benign paragraphs): `pydoc` (Python's bundled docs, English), `handbook:LANG`
(Debian's debian-handbook HTML, e.g. `handbook:de-DE`; `apt install debian-handbook`), or a
.txt file / directory of .txt files with blank-line-separated paragraphs; a comma-separated
list of them mixes their paragraphs.

Every draw is counter-based (seed, row, copy): the same inputs give the same documents whatever
the order they are built in.
"""
from __future__ import annotations

import html.parser
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from masklab.errors import DataError

HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
MIN_PARAGRAPH_CHARS = 40  # headings, captions and menu labels are not document text


class _ParagraphParser(html.parser.HTMLParser):
    """Text of every paragraph: <p>, or DocBook's <div class="para"> (what debian-handbook's
    publican HTML uses), entities unescaped, whitespace collapsed; a paragraph nested in
    another is part of it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.open_at, self.buf, self.out = [], None, [], []

    def handle_starttag(self, tag, attrs):
        if tag in ("p", "div"):
            self.stack.append(tag)
            para = tag == "p" or "para" in (dict(attrs).get("class") or "").split()
            if para and self.open_at is None:
                self.open_at = len(self.stack)

    def handle_endtag(self, tag):
        if tag in ("p", "div") and self.stack:
            if self.open_at == len(self.stack):
                self.out.append(" ".join("".join(self.buf).split()))
                self.buf, self.open_at = [], None
            self.stack.pop()

    def handle_data(self, data):
        if self.open_at is not None:
            self.buf.append(data)


def html_paragraphs(path: Path) -> list[str]:
    p = _ParagraphParser()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p.out


def _text_paragraphs(path: Path) -> list[str]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    out = []
    for f in files:
        out += [" ".join(b.split()) for b in f.read_text(encoding="utf-8", errors="replace").split("\n\n")]
    return out


def carrier_paragraphs(source: str) -> list[str]:
    """Benign paragraphs of a carrier source (see module doc), in a fixed order; several
    sources separated by commas are concatenated (e.g. "handbook:nl-NL,handbook:pt-BR")."""
    if "," in source:
        return [t for part in source.split(",") if part.strip() for t in carrier_paragraphs(part.strip())]
    if source == "pydoc":
        from masklab.data_prep.corpus import pydoc_documents

        paras = pydoc_documents()
    elif source.startswith("handbook:"):
        lang = source.split(":", 1)[1]
        d = HANDBOOK / lang
        if not d.is_dir():
            have = sorted(p.name for p in HANDBOOK.iterdir() if p.is_dir() and "-" in p.name) if HANDBOOK.is_dir() else []
            raise DataError(f"carrier source '{source}': no {d}" + (f"; languages here: {', '.join(have)}" if have else
                                                                    " (apt install debian-handbook)"))
        paras = [t for f in sorted(d.glob("*.html")) for t in html_paragraphs(f)]
    else:
        p = Path(source)
        if not p.exists():
            raise DataError(f"carrier source '{source}': not 'pydoc', 'handbook:LANG' or an existing .txt file/dir")
        paras = _text_paragraphs(p)
    paras = [t for t in paras if len(t) >= MIN_PARAGRAPH_CHARS]
    if len(paras) < 2:
        raise DataError(f"carrier source '{source}': {len(paras)} paragraphs of >= {MIN_PARAGRAPH_CHARS} characters "
                        "(need at least 2)")
    return paras


@dataclass(frozen=True)
class CarrierSpec:
    """How documents are built: `copies` carried copies of each row, `context_chars` of carrier
    text around each (drawn uniformly in [min, max], split at a random paragraph boundary before
    and after the prompt), and `plain` carrier-only benign documents per input row."""
    source: str = "pydoc"
    copies: int = 1
    context_chars: tuple[int, int] = (200, 1200)
    plain: float = 0.5
    seed: int = 0


def _document(paras: list[str], rng: np.random.Generator, chars: int) -> list[str]:
    """Consecutive paragraphs from a random start until `chars` characters (a real document's run)."""
    i, out, n = int(rng.integers(len(paras))), [], 0
    while n < chars:
        out.append(paras[i % len(paras)])
        n += len(out[-1])
        i += 1
    return out


def carry_texts(texts: list[str], spec: CarrierSpec, paras: list[str], stream: int = 0) -> list[list[str]]:
    """-> per text, its `spec.copies` carried documents. `stream` separates independent uses
    (train vs validation) that share a seed."""
    lo, hi = spec.context_chars
    out = []
    for i, t in enumerate(texts):
        docs = []
        for c in range(spec.copies):
            rng = np.random.default_rng([spec.seed, stream, i, c])
            ctx = _document(paras, rng, int(rng.integers(lo, hi + 1)))
            cut = int(rng.integers(len(ctx) + 1))
            docs.append("\n\n".join(ctx[:cut] + [t] + ctx[cut:]))
        out.append(docs)
    return out


def plain_documents(n: int, spec: CarrierSpec, paras: list[str], stream: int = 0) -> list[str]:
    lo, hi = spec.context_chars
    out = []
    for j in range(n):
        rng = np.random.default_rng([spec.seed, stream, 1 << 20, j])
        out.append("\n\n".join(_document(paras, rng, int(rng.integers(lo, hi + 1)))))
    return out


def carried(data, spec: CarrierSpec, keep_original: bool, stream: int = 0, paras=None,
            plain_columns: dict | None = None):
    """LabelledData -> LabelledData of its rows carried in documents (+ the rows themselves when
    `keep_original`) + round(plain * N) plain benign documents. Columns are copied to the carried
    rows; plain documents take `plain_columns` (e.g. {"lang": "de"}) and "" elsewhere; a
    `carrier` column says 'none', the source, or 'plain:SOURCE'."""
    from masklab.downstream.data.labelled import LabelledData

    if spec.copies < 0 or spec.plain < 0 or not (0 <= spec.context_chars[0] <= spec.context_chars[1]):
        raise DataError(f"carriers: copies and plain must be >= 0 and 0 <= min <= max context chars (got {spec})")
    paras = paras if paras is not None else carrier_paragraphs(spec.source)
    idx, texts, tags = [], [], []
    if keep_original:
        idx, texts, tags = list(range(len(data))), list(data.texts), ["none"] * len(data)
    for i, docs in enumerate(carry_texts(list(data.texts), spec, paras, stream)):
        idx += [i] * len(docs)
        texts += docs
        tags += [spec.source] * len(docs)
    plain = plain_documents(int(round(spec.plain * len(data))), spec, paras, stream)
    y = np.concatenate([data.labels[np.asarray(idx, dtype=np.int64)], np.zeros(len(plain), np.int64)])
    fill = plain_columns or {}
    cols = {k: [v[i] for i in idx] + [fill.get(k, "")] * len(plain) for k, v in data.columns.items() if k != "carrier"}
    cols["carrier"] = tags + [f"plain:{spec.source}"] * len(plain)
    return LabelledData(texts + plain, y, f"{data.source}+carried:{spec.source}", dict(data.label_names), cols)
