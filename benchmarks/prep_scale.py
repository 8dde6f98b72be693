"""`masklab prep` at corpus scale (issue 16): encoding throughput against the raw `tokenizers`
batch encoder measured in the same run, peak RSS across sizes, and --num-proc 1 vs 2.

Corpus: K shuffled copies of pydoc_data.topics prose (one paragraph per document) written as
.txt files of ~1 MB, at each size. One tokenizer (WordPiece, --vocab-size) is trained once on the
smallest corpus from a bounded sample (its own row) and then passed as --tokenizer to every
timed prep, so what is timed is the encoding. Each prep runs in its own child process:
CPU s = user + sys of the child and of its pool workers (RUSAGE_SELF + RUSAGE_CHILDREN), peak
RSS = max ru_maxrss of the child and of any one worker. The peer, also in a child, is
`Tokenizer.encode_batch` (same tokenizer.json, batches of 1000 paragraphs,
add_special_tokens=False, TOKENIZERS_PARALLELISM=false) over the same paragraphs, timed in
process CPU time around the encode calls only (prep's figure also pays reading, splitting,
the validation split and writing shards).

    python -m benchmarks.prep_scale [--quick] [--sizes 5,20,45] [--work DIR] [--out FILE]

--work DIR keeps the corpora and prepared outputs (DIR/prep_<MB>mb) for benchmarks/data_input.py.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.child_process import run_child
from benchmarks.results_table import machine_line, rerun_command, write_table

FILE_BYTES = 1 << 20


def _usage() -> tuple[float, float]:
    """-> (CPU seconds of self + waited children, peak RSS MB of self or any one child)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime, max(s.ru_maxrss, c.ru_maxrss) / 1024


def write_corpus(dest: Path, mb: float, seed: int = 0) -> Path:
    """K shuffled copies of the pydoc paragraphs as ~1 MB .txt files, about `mb` MB in all."""
    from masklab.data_prep.corpus import pydoc_documents

    docs = pydoc_documents()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rng, target, written, n, buf, size = random.Random(seed), int(mb * 1e6), 0, 0, [], 0
    while written < target:
        order = docs[:]
        rng.shuffle(order)
        for d in order:
            buf.append(d)
            size += len(d.encode()) + 2
            if size >= FILE_BYTES or written + size >= target:
                (dest / f"part{n:04d}.txt").write_text("\n\n".join(buf) + "\n")
                written, n, buf, size = written + size, n + 1, [], 0
                if written >= target:
                    break
    return dest


def _child_prep(args) -> int:
    from masklab.data_prep import PrepOptions, ShardSet, prepare

    t, c0 = time.perf_counter(), _usage()[0]
    out = prepare(PrepOptions(source=args.corpus, out=args.prep_out, tokenizer=args.tokenizer or None,
                              vocab_size=args.vocab_size, num_proc=args.num_proc, overwrite=True,
                              tokenizer_sample_bytes=args.sample_bytes))
    wall = time.perf_counter() - t
    cpu, rss = _usage()
    tokens = sum(ShardSet(out, s, verify="none").num_tokens for s in ShardSet(out, "train", "none").manifest["splits"])
    print(json.dumps({"wall": wall, "cpu": cpu - c0, "tokens": tokens, "rss": rss}))
    return 0


def _child_raw(args) -> int:
    from tokenizers import Tokenizer

    from masklab.data_prep.corpus import paragraphs

    tok = Tokenizer.from_file(args.tokenizer)
    docs = [d for f in sorted(Path(args.corpus).glob("*.txt")) for d in paragraphs(f.read_text().splitlines())]
    tokens, cpu, t = 0, 0.0, time.perf_counter()
    for i in range(0, len(docs), 1000):
        c = time.process_time()
        enc = tok.encode_batch(docs[i:i + 1000], add_special_tokens=False)
        cpu += time.process_time() - c
        tokens += sum(len(e.ids) for e in enc)
    print(json.dumps({"wall": time.perf_counter() - t, "cpu": cpu, "tokens": tokens, "docs": len(docs),
                      "rss": _usage()[1]}))
    return 0


def _run_child(*argv) -> dict:
    return run_child("benchmarks.prep_scale", *argv, env={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})


def prep(corpus: Path, out: Path, tokenizer: str, num_proc: int = 1, vocab_size: int = 8192,
         sample_bytes: int = 1 << 30) -> dict:
    return _run_child("--kind", "prep", "--corpus", str(corpus), "--prep-out", str(out), "--tokenizer", tokenizer,
                      "--num-proc", str(num_proc), "--vocab-size", str(vocab_size), "--sample-bytes", str(sample_bytes))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 1, 4 MB")
    ap.add_argument("--sizes", help="corpus sizes in MB (comma separated; default 5,20,45)")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--sample-bytes", type=int, default=4 << 20, help="tokenizer training sample (bytes)")
    ap.add_argument("--work", default="", help="keep corpora and prepared outputs here")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--prep-out", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", default="", help="a fixed tokenizer.json (default: train one on the smallest "
                                                    "corpus first)")
    ap.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child_prep(args) if args.kind == "prep" else _child_raw(args)
    sizes = [float(s) for s in (args.sizes or ("1,4" if args.quick else "5,20,45")).split(",")]
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        corpora = {mb: write_corpus(work / f"corpus_{mb:g}mb", mb) for mb in sizes}
        tokenizer = args.tokenizer
        if not tokenizer:
            r = prep(corpora[sizes[0]], work / "tok_train", "", 1, args.vocab_size, args.sample_bytes)
            tokenizer = str(work / "tokenizer.json")
            shutil.copy(work / "tok_train" / "tokenizer" / "tokenizer.json", tokenizer)
            rows.append([f"{sizes[0]:g} (train tokenizer, {args.sample_bytes / 1e6:.0f} MB sample + encode)",
                         f"{r['tokens']:,}", f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['tokens'] / r['cpu']:,.0f}",
                         "-", "-", f"{r['rss']:.0f}", "-"])
            shutil.rmtree(work / "tok_train", ignore_errors=True)
        for i, mb in enumerate(sizes):
            p = prep(corpora[mb], work / f"prep_{mb:g}mb", tokenizer, 1, args.vocab_size)
            raw = _run_child("--kind", "raw", "--corpus", str(corpora[mb]), "--tokenizer", tokenizer)
            pt, rt = p["tokens"] / p["cpu"], raw["tokens"] / raw["cpu"]
            speedup = "-"
            if i == len(sizes) - 1:
                p2 = prep(corpora[mb], work / f"prep_{mb:g}mb_np2", tokenizer, 2, args.vocab_size)
                speedup = f"{p['wall'] / p2['wall']:.2f}x ({p['wall']:.1f} s / {p2['wall']:.1f} s)"
                shutil.rmtree(work / f"prep_{mb:g}mb_np2", ignore_errors=True)
            rows.append([f"{mb:g}", f"{p['tokens']:,}", f"{p['wall']:.1f}", f"{p['cpu']:.1f}", f"{pt:,.0f}",
                         f"{rt:,.0f}", f"{pt / rt:.2f}x", f"{p['rss']:.0f}", speedup])
    finally:
        if tmp is not None:
            tmp.cleanup()
    note = (f"{machine_line(1)} Corpus: shuffled copies of pydoc_data.topics paragraphs as ~1 MB .txt files; "
            f"WordPiece vocab {args.vocab_size}, one fixed tokenizer for every timed row. CPU s includes the "
            "pool workers; raw = `tokenizers` `Tokenizer.encode_batch` (1000 paragraphs a batch, "
            "add_special_tokens=False, one thread), encode calls only. Targets: ratio >= 0.7x, peak RSS <= "
            "1500 MB and flat, --num-proc 2 speedup >= 1.7x (2 cores, shared machine: wall clock is noisy). "
            "Command: " + rerun_command("benchmarks.prep_scale", args.quick, args.sizes) + ".")
    write_table(args.out, "masklab prep at scale (fixed tokenizer)",
                ["corpus MB", "tokens", "prep wall s", "prep CPU s", "prep tokens/CPU-s",
                 "raw encode_batch tokens/CPU-s", "ratio", "peak RSS MB", "num-proc 2 speedup"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
