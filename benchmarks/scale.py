"""`masklab prep` at corpus scale (issue 16): wall seconds per GB at --num-proc 1 and 2, tokens per
CPU second against the raw `tokenizers` batch encoder measured in the same run, and peak RSS per
process, over corpus sizes spanning 20x (default 0.1 / 0.5 / 2 GB of text, ~50 min on 2 cores).

Corpus: benchmarks/text_corpus.py: the real text on this machine (python3.11-doc reST sources,
debian-handbook en-US, pydoc_data.topics: ~11 MB) once, then a word-bigram Markov chain trained on
it for the volume, as ~1 MB .txt files of paragraph documents. One WordPiece tokenizer is trained
once on the smallest corpus from a bounded sample (its own row: --tokenizer-sample-bytes) and then
passed as --tokenizer to every timed prep, so what is timed is the encoding (reading, word
starts, validation split, shard writing and the manifest included). Each prep runs in its own
child process: CPU s = user + sys of the child and of its pool workers (RUSAGE_SELF +
RUSAGE_CHILDREN), peak RSS = max ru_maxrss of the child or of any one worker (per process, as
the target is stated). The peer, also in a child, streams the same .txt files one at a time
through `Tokenizer.encode_batch` (same tokenizer.json, batches of 1000 paragraphs,
add_special_tokens=False, TOKENIZERS_PARALLELISM=false), timed in process CPU time around the
encode calls only.

    python -m benchmarks.scale [--quick] [--sizes 100,500,2000] [--work DIR] [--out FILE]

--work DIR keeps the corpora and the --num-proc 1 outputs (DIR/prep_<MB>mb; benchmarks/data_input.py
reuses them); without it everything lives in a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.child_process import run_child
from benchmarks.results_table import machine_line, rerun_command, write_table

# targets of issue 16 (per process, 2 cores)
LINEAR, FLAT_RSS, RATIO, SPEEDUP, RSS_MB = 1.25, 1.3, 0.7, 1.7, 1500


def _usage() -> tuple[float, float]:
    """-> (CPU seconds of self + waited children, peak RSS MB of self or any one child).

    Self's peak is VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child
    would report at least the RSS of whatever process started it."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = s.ru_maxrss
    try:
        own = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime, max(own, c.ru_maxrss) / 1024


def write_corpus(dest: Path, mb: float, seed: int = 0) -> Path:
    """A benchmark corpus of about `mb` MB of text (benchmarks/text_corpus.py), reused when present."""
    from benchmarks.text_corpus import write_corpus as write

    return write(dest, mb, seed)


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


def _child_corpus(args) -> int:
    from benchmarks.text_corpus import real_paragraphs

    write_corpus(Path(args.corpus), float(args.mb))
    print(json.dumps(real_paragraphs()[1]))
    return 0


def _child_raw(args) -> int:
    from tokenizers import Tokenizer

    from masklab.data_prep.corpus import paragraphs

    tok = Tokenizer.from_file(args.tokenizer)
    tokens, docs, cpu, nbytes = 0, 0, 0.0, 0
    for f in sorted(Path(args.corpus).glob("*.txt")):
        text = f.read_text()
        nbytes += len(text.encode())
        part = list(paragraphs(text.splitlines()))
        docs += len(part)
        for i in range(0, len(part), 1000):
            c = time.process_time()
            enc = tok.encode_batch(part[i:i + 1000], add_special_tokens=False)
            cpu += time.process_time() - c
            tokens += sum(len(e.ids) for e in enc)
    print(json.dumps({"cpu": cpu, "tokens": tokens, "docs": docs, "bytes": nbytes, "rss": _usage()[1]}))
    return 0


def _run_child(*argv) -> dict:
    return run_child("benchmarks.scale", *argv, env={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})


def prep(corpus: Path, out: Path, tokenizer: str, num_proc: int = 1, vocab_size: int = 8192,
         sample_bytes: int = 1 << 30) -> dict:
    """`masklab prep` of `corpus` into `out` in a child -> {wall, cpu, tokens, rss}."""
    return _run_child("--kind", "prep", "--corpus", str(corpus), "--prep-out", str(out), "--tokenizer", tokenizer,
                      "--num-proc", str(num_proc), "--vocab-size", str(vocab_size), "--sample-bytes", str(sample_bytes))


def verdicts(m: list[dict]) -> list[str]:
    """Target lines from the per-size measurements (smallest first)."""
    lo, hi = m[0], m[-1]

    def line(ok: bool, what: str) -> str:
        return f"- {'met' if ok else 'MISSED'}: {what}"

    lin = hi["s_gb1"] / lo["s_gb1"]
    flat = hi["rss1"] / lo["rss1"]
    worst_ratio = min(r["ratio"] for r in m)
    worst_speedup = min(r["speedup"] for r in m[1:] or m)
    peak = max(max(r["rss1"], r["rss2"]) for r in m)
    return [
        line(lin <= LINEAR, f"time linear in size: s/GB at {hi['mb']:g} MB is {lin:.2f}x that at {lo['mb']:g} MB "
                            f"(target <= {LINEAR}x)"),
        line(flat <= FLAT_RSS, f"RSS flat: peak RSS at {hi['mb']:g} MB is {flat:.2f}x that at {lo['mb']:g} MB "
                               f"(target <= {FLAT_RSS}x)"),
        line(worst_ratio >= RATIO, f"throughput: lowest prep / raw tokens-per-CPU-s ratio {worst_ratio:.2f}x "
                                   f"(target >= {RATIO}x)"),
        line(worst_speedup >= SPEEDUP, f"parallel: lowest --num-proc 2 speedup {worst_speedup:.2f}x"
                                       + (" (sizes above the smallest)" if len(m) > 1 else "")
                                       + f" (target >= {SPEEDUP}x on 2 cores)"),
        line(peak <= RSS_MB, f"memory: highest peak RSS per process {peak:.0f} MB (target <= {RSS_MB} MB)"),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 0.2, 1, 4 MB")
    ap.add_argument("--sizes", help="corpus sizes in MB (comma separated; default 100,500,2000)")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--sample-bytes", type=int, default=16 << 20, help="tokenizer training sample (bytes)")
    ap.add_argument("--work", default="", help="keep corpora and prepared outputs here")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--prep-out", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", default="", help="a fixed tokenizer.json (default: train one on the smallest "
                                                    "corpus first)")
    ap.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--mb", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return {"prep": _child_prep, "raw": _child_raw, "corpus": _child_corpus}[args.kind](args)
    sizes = sorted(float(s) for s in (args.sizes or ("0.2,1,4" if args.quick else "100,500,2000")).split(","))
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    rows, measured = [], []
    try:
        # generated in a child: the parent stays small, so nothing it holds shows in a child's RSS
        corpora = {mb: work / f"corpus_{mb:g}mb" for mb in sizes}
        for mb in sizes:
            real = _run_child("--kind", "corpus", "--corpus", str(corpora[mb]), "--mb", str(mb))
        tokenizer = args.tokenizer
        if not tokenizer:
            r = prep(corpora[sizes[0]], work / "tok_train", "", 1, args.vocab_size, args.sample_bytes)
            tokenizer = str(work / "tokenizer.json")
            shutil.copy(work / "tok_train" / "tokenizer" / "tokenizer.json", tokenizer)
            rows.append([f"{sizes[0]:g} (train tokenizer on a {min(args.sample_bytes / 1e6, sizes[0]):.3g} MB "
                         "sample, then encode)", f"{r['tokens']:,}", f"{r['wall']:.1f}", "-", "-", "-", "-",
                         f"{r['tokens'] / r['cpu']:,.0f}", "-", "-", f"{r['rss']:.0f}", "-"])
            shutil.rmtree(work / "tok_train", ignore_errors=True)
        for mb in sizes:
            p1 = prep(corpora[mb], work / f"prep_{mb:g}mb", tokenizer, 1, args.vocab_size)
            p2 = prep(corpora[mb], work / f"prep_{mb:g}mb_np2", tokenizer, 2, args.vocab_size)
            shutil.rmtree(work / f"prep_{mb:g}mb_np2", ignore_errors=True)
            if not args.work:
                shutil.rmtree(work / f"prep_{mb:g}mb", ignore_errors=True)
            raw = _run_child("--kind", "raw", "--corpus", str(corpora[mb]), "--tokenizer", tokenizer)
            if raw["tokens"] != p1["tokens"] or p1["tokens"] != p2["tokens"]:
                raise RuntimeError(f"{mb:g} MB: token counts differ (prep 1 proc {p1['tokens']}, 2 procs "
                                   f"{p2['tokens']}, raw {raw['tokens']})")
            gb = raw["bytes"] / 1e9
            pt, rt = p1["tokens"] / p1["cpu"], raw["tokens"] / raw["cpu"]
            m = {"mb": mb, "s_gb1": p1["wall"] / gb, "s_gb2": p2["wall"] / gb, "speedup": p1["wall"] / p2["wall"],
                 "ratio": pt / rt, "rss1": p1["rss"], "rss2": p2["rss"]}
            measured.append(m)
            rows.append([f"{mb:g}", f"{p1['tokens']:,}", f"{p1['wall']:.1f}", f"{m['s_gb1']:.0f}", f"{p2['wall']:.1f}",
                         f"{m['s_gb2']:.0f}", f"{m['speedup']:.2f}x", f"{pt:,.0f}", f"{rt:,.0f}", f"{m['ratio']:.2f}x",
                         f"{p1['rss']:.0f}", f"{p2['rss']:.0f}"])
    finally:
        if tmp is not None:
            tmp.cleanup()
    found = ", ".join(f"{k} {v:.1f} MB" for k, v in real.items())
    note = "\n".join([
        f"{machine_line(1)} Corpus: real text ({found}) once, then benchmarks/text_corpus.py's word-bigram "
        f"Markov chain trained on it, as ~1 MB .txt files; WordPiece vocab {args.vocab_size}, one fixed tokenizer "
        "for every timed row. Wall = the prep child's wall clock; CPU s includes the pool workers; raw = "
        "`tokenizers` `Tokenizer.encode_batch` streamed file by file (1000 paragraphs a batch, "
        "add_special_tokens=False, one thread), encode calls only; the ratio compares tokens per CPU second "
        "(prep at 1 process). Peak RSS = the largest ru_maxrss of any one process (the parent or a worker). "
        "2 cores, shared machine: wall clock is noisy, the CPU-second ratio less so. Command: "
        + rerun_command("benchmarks.scale", args.quick, args.sizes) + ".",
        "",
        "Targets (issue 16):",
        *verdicts(measured),
    ])
    write_table(args.out, "Scale: masklab prep from 0.1 to 2 GB of text" if not args.quick and not args.sizes
                else "Scale: masklab prep", ["corpus MB", "tokens", "1 proc wall s", "1 proc s/GB", "2 procs wall s",
                                             "2 procs s/GB", "speedup", "prep tokens/CPU-s",
                                             "raw encode_batch tokens/CPU-s", "ratio", "peak RSS MB, 1 proc",
                                             "peak RSS MB per process, 2 procs"], rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
