"""`make bench`: run every benchmark script in its own process and collect benchmarks/RESULTS.md.

CPU by default (~90 minutes on 2 cores, half of it the Scale table: prep of 0.1 / 0.5 / 2 GB of
text); `--gpu` adds the CUDA paths (kernels vs flash_attn / SDPA, bf16); `--quick` shrinks every
run (a smoke check of the scripts); `--only a,b` reruns some jobs and keeps the other sections.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


TARGETS = """Where the gain comes from, regime by regime (what to expect on your data):
- Short documents (paragraphs <= 128 tokens, batch 32; the pretraining table's cell notes give the
  padding share of HF's batches): against HF padded, the gain is unpadding (no FLOPs on padding)
  plus the sparse MLM head (the vocabulary projection runs on the ~15% predicted rows only).
  Against the strongest peer, "HF + gather" (HF's encoder, then the head on the masked rows),
  which has the sparse head too, what remains is unpadding and the sparse last layer.
- Long sequences (documents chunked to 512, batch 8): hardly any padding, so against HF padded the
  gain is the sparse head; against HF + gather only the sparse last layer (~1/L of the encoder) and
  fewer copies remain: expect parity to a few tens of percent, not multiples.
- Late-mask insertion: at a 50% masking rate the layers below the insertion layer run on the
  visible half of the tokens. Token Dropping: the middle layers run on half of the tokens; the
  embeddings, first and last layers, head and optimizer do not shrink, so with the middle half of
  a 12-layer model dropping, about a quarter of the layer time is saved on short inputs (a little
  more at 512, where attention's quadratic part shrinks to a quarter in those layers).
- Every figure below is CPU fp32 (one thread unless a table says otherwise); nothing is GPU-measured.

Targets (ratios within one run; issue 21 / 20 and shared/PERF_BASELINES.md): bert preset >= 2.5x
HF + gather on paragraphs and >= 1.15x on 512-chunks, modernbert preset >= 2x / >= 1.2x HF
ModernBertForMaskedLM (sparse prediction), utilisation >= 85% of the measured matmul peak at 6x384;
whole-word collator >= 20x HF at L=512; fused gather + loss peak memory <= 0.15x materialised,
time <= 1.3x; late insertion step time <= 0.8x input masking; Token Dropping step <= 0.75x.
Detection fine-tuning (issue 34): `finetune` >= 2x the rows/s of HF dynamic padding at <= 0.5x its peak RSS.
The pretraining and Token Dropping tables say which targets their run met or missed, and by how
much; the other tables give the measured ratio to compare with the target above.

"""


def jobs(quick: bool, gpu: bool) -> list[tuple[str, list[str]]]:
    s = "2" if quick else "6"
    out = [
        ("train", ["train_throughput.py"] + (["--quick"] if quick else [])),
        ("late", ["late_masking.py", "--steps", s] + (["--layers", "4", "--hidden", "128"] if quick else [])),
        ("token_drop", ["token_drop.py"] + (["--quick"] if quick else [])),
        ("collator", ["collator.py"] + (["--quick"] if quick else [])),
        ("kernels", ["kernels.py"] + (["--dry-run"] if quick and not gpu else [])),
        ("detection", ["detection.py"] + (["--quick"] if quick else [])),
        ("detection_documents", ["detection_documents.py"] + (["--quick"] if quick else [])),
        ("detection_finetune", ["detection_finetune.py"] + (["--quick"] if quick else [])),
        ("detection_goals", ["detection_goals.py"] + (["--quick"] if quick else [])),
        ("pmi", ["pmi_scale.py", "--memory-limit", "256MB"] + (["--quick"] if quick else [])),
        ("scale", ["scale.py"] + (["--quick"] if quick else [])),
        ("data_input", ["data_input.py"] + (["--quick"] if quick else [])),
        ("packing", ["packing.py"] + (["--quick"] if quick else [])),
        ("gpu_train", ["gpu_train.py"] + ([] if gpu else ["--dry-run"])),
        ("cli_startup", ["cli_startup.py"] + (["--quick"] if quick else [])),
        ("glue_speed", ["glue_speed.py"] + (["--quick"] if quick else [])),
        ("sweeps", ["sweeps_summary.py"]),  # reads the committed recipe reports (benchmarks/sweeps/): trains nothing
    ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--only", default="", help="comma-separated job names to rerun; the other sections are "
                                               "collected from their results_<name>.md as the last run left them "
                                               "(each carries its own commit and date)")
    args = ap.parse_args(argv)
    all_jobs = jobs(args.quick, args.gpu)
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - {n for n, _ in all_jobs})
    if unknown:
        ap.error(f"--only: unknown job(s) {', '.join(unknown)}; jobs: {', '.join(n for n, _ in all_jobs)}")
    sections, failed = [], []
    for name, cmd in all_jobs:
        script = HERE / cmd[0]
        if not script.exists():
            sections.append(f"## {name}\n\n(missing: {script.name} is not in this checkout)\n")
            continue
        part = Path(args.out).parent / f"results_{name}.md"
        if only and name not in only:
            sections.append(part.read_text() if part.exists() else f"## {name}\n\n(not run yet)\n")
            continue
        t = time.time()
        module = f"benchmarks.{script.stem}"  # a package run from the checkout root: no sys.path edits
        r = subprocess.run([sys.executable, "-m", module, *cmd[1:], "--out", str(part)], cwd=ROOT)
        print(f"[{name}] exit {r.returncode} in {time.time() - t:.0f}s", flush=True)
        if r.returncode != 0 or not part.exists():
            failed.append(name)
            sections.append(f"## {name}\n\n(failed with exit code {r.returncode})\n")
        else:
            sections.append(part.read_text())
    # results no job writes (measured by hand, e.g. results_glue_minilm.md on fetched GLUE files) are
    # kept as they are rather than dropped from RESULTS.md
    made = {f"results_{n}.md" for n, _ in all_jobs}
    for part in sorted(Path(args.out).parent.glob("results_*.md")):
        if part.name not in made:
            sections.append(part.read_text())
    Path(args.out).write_text("# MaskLab benchmark results\n\nGenerated by `python -m benchmarks.run_all"
                              + (" --quick" if args.quick else "") + (" --gpu" if args.gpu else "")
                              + (f" --only {args.only}` (the other sections: their last full run)" if only else "`")
                              + ". Every ratio compares systems measured in the same process and run.\n\n"
                              + TARGETS
                              + "\n".join(sections))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
