"""The per-paper verdicts of the sweep recipes (configs/sweeps/), from their committed reports.

    masklab sweep configs/sweeps/1_wettig_rate.yaml --parallel 2 --compare     # each recipe, then
    python -m benchmarks.sweeps_summary --collect runs/sweeps                   # copy the reports here
    python -m benchmarks.sweeps_summary --out benchmarks/results_sweeps.md      # the table

Each recipe's report (benchmarks/sweeps/<name>/: report.md / report.html / PNGs / summary.json, as
`masklab compare` wrote them) is read as it is; nothing is retrained here. A paper's claim is a
direction (its variant beats the baseline on a metric); the verdict maps `masklab compare`'s
paired-difference verdict onto it: "direction reproduced" when the 95% interval of the per-seed
difference lies on the paper's side of 0, "opposite" when it lies on the other side, "within noise
at this scale" when it contains 0. The interpretation (why, what the scale cannot show) is the
recipe's VERDICT.md, written by whoever ran it and printed under the table.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEPS = HERE / "sweeps"
REPORT_FILES = ("report.md", "report.html", "summary.json", "loss_vs_tokens.png", "loss_vs_flops.png",
                "metrics.png", "paired_diffs.png", "mask_rate.png")

# recipe name -> (paper, its claim, [(variant, baseline)], headline metrics)
CLAIMS = {
    "wettig_rate": ("Wettig et al. 2023", "masking 40% beats 15%", [("rate40", "rate15"), ("rate30", "rate15")]),
    "ankner_schedule": ("Ankner et al. 2024", "a linear 30->15% schedule beats constant 15%",
                        [("linear30to15", "constant15")]),
    "units": ("Levine et al. 2021; Joshi et al. 2020", "PMI / span (and whole-word) units beat token units",
              [("pmi", "token"), ("span", "token"), ("whole_word", "token")]),
    "late_insertion": ("Liao et al. 2022 (3ML)", "40% masking with late [MASK] insertion matches or beats 15% "
                       "input masking at equal compute", [("late40", "input15")]),
    "token_dropping": ("Hou et al. 2022", "Token Dropping reaches the baseline with less compute, i.e. beats it at "
                       "equal FLOPs", [("drop50", "none")]),
    "informask": ("Sadeq et al. 2022", "InforMask beats random masking", [("informask", "random")]),
    "continued_minilm": ("this product's claim", "continued pretraining on the deployment's prose improves "
                         "detection", [("steps_N", "steps_0"), ("steps_4N", "steps_0")]),
}
HEADLINE = ["val_loss", "mlm_loss", "mlm_acc", "pll_per_token", "det_channel_roc_auc", "det_lang_roc_auc"]
VERDICT = {"better": "direction reproduced", "worse": "opposite", "within noise": "within noise at this scale"}


def collect(runs: Path) -> list[str]:
    """Copy runs/<name>/report/* of every finished recipe report into benchmarks/sweeps/<name>/."""
    done = []
    for name in CLAIMS:
        src = runs / name / "report"
        if not (src / "summary.json").is_file():
            continue
        dst = SWEEPS / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in REPORT_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, dst / f)
        shutil.copy2(runs / name / "spec.yaml", dst / "spec.yaml")
        done.append(name)
    return done


def _fmt(x: float) -> str:
    return f"{x:+.3g}" if abs(x) >= 1e-3 else f"{x:+.2e}"


def section(name: str) -> list[str]:
    paper, claim, pairs = CLAIMS[name]
    d = SWEEPS / name
    s = json.loads((d / "summary.json").read_text())
    compute = s["compute"]  # variant -> [cells, steps, tokens, FLOPs, wall s, eval s, CPU h, peak MB, segments]
    rows = []
    for variant, base in pairs:
        if variant not in s["metrics"]:
            rows.append(f"| {variant} vs {base} | (not run) | | | |")
            continue
        for m in HEADLINE:
            r = s["metrics"][variant].get(m)
            if not r or "diff" not in r:
                continue
            v = VERDICT.get(r["verdict"], r["verdict"])
            rows.append(f"| {variant} vs {base} | {m} | {r['mean']:.4g} vs {s['metrics'][base][m]['mean']:.4g} | "
                        f"{_fmt(r['diff'])} [{_fmt(r['diff_lo'])}, {_fmt(r['diff_hi'])}] (n={r['n']}) | {v} |")
    cells = sum(int(c[0]) for c in compute.values())
    cpu_h = sum(float(c[6]) for c in compute.values())
    per = "; ".join(f"{k}: {c[1]} steps, {c[2]} tokens, {c[3]} FLOPs" for k, c in compute.items())
    out = [f"### {name}: {paper}", "", f"Claim: {claim}. Report: `benchmarks/sweeps/{name}/report.md`. "
           f"Compute: {cells} cells, {cpu_h:.2f} training CPU-hours in all (per cell: {per}).", "",
           "| comparison | metric | mean (variant vs baseline) | paired diff [95% CI] | verdict |",
           "|---|---|---|---|---|", *rows, ""]
    if (d / "VERDICT.md").is_file():
        out += [(d / "VERDICT.md").read_text().strip(), ""]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results_sweeps.md"))
    ap.add_argument("--collect", metavar="RUNS", help="first copy the finished reports from RUNS/<name>/report")
    args = ap.parse_args(argv)
    if args.collect:
        print("collected:", ", ".join(collect(Path(args.collect))) or "nothing")
    have = [n for n in CLAIMS if (SWEEPS / n / "summary.json").is_file()]
    md = ["## Masking sweeps: the papers' claims at this machine's scale", "",
          "Each recipe in `configs/sweeps/` run with `masklab sweep SPEC --parallel 2 --compare` on 2 CPU cores, "
          "real Python / Debian documentation text (`python -m benchmarks.sweep_data`). Verdicts come from the paired "
          "per-seed difference (95% Student t over seeds; with 3 seeds t = 4.30 and with 2 seeds 12.7, so only "
          "large effects leave 'within noise'). Metrics: `val_loss` the run's last held-out loss at 15% with "
          "its own masking units and insertion (a late-insertion model inserts late here too), `mlm_loss` / `mlm_acc` / `pll_per_token` from `masklab evaluate` at a fixed 15% token "
          "masking with input insertion for every model, `det_*_roc_auc` cross-source detection with the cell's encoder (bastioncorpus: 59 and 36 "
          "test rows, so these are coarse). Lower is better for losses; higher for accuracy, PLL and ROC-AUC. "
          "These are small models trained for minutes: a verdict here says what holds at this scale, not "
          "whether the paper is right at its own.", ""]
    missing = [n for n in CLAIMS if n not in have]
    if missing:
        md += [f"Not run yet: {', '.join(missing)}.", ""]
    for n in have:
        md += section(n)
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out} ({len(have)} recipes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
