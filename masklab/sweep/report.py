"""`masklab compare SWEEP_DIR [--baseline NAME]`: tables, plots, report.md and a self-contained report.html.

Per variant and metric: the mean over seeds with its t-interval; the paired difference to the
baseline (per-seed differences, t-interval: stats.py) and a verdict (better / worse / within
noise at the chosen level). Per variant: the compute it took (real tokens and executed FLOPs from
the training log, wall seconds, CPU hours, peak memory). Plots: validation loss against tokens and
against FLOPs (mean line, min-max seed band), one bar panel per metric with t-interval error bars,
and the masking rate against step when a variant follows a schedule.
"""
from __future__ import annotations

import base64
import json
import math
import os
import platform
from pathlib import Path
from typing import Optional

from masklab.errors import MaskLabError
from masklab.sweep import plots
from masklab.sweep.collect import by_variant, read_sweep
from masklab.sweep.evaluations import lower_is_better
from masklab.sweep.stats import paired_difference, t_interval, verdict


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _g(x: float, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def metric_rows(groups: dict, baseline: str, level: float) -> tuple[list[list], list[str], dict]:
    metrics = sorted({m for rs in groups.values() for r in rs for m in r.metrics})
    base = {r.cell.seed: r for r in groups[baseline]}
    rows, summary = [], {}
    for m in metrics:
        for name, rs in groups.items():
            vals = {r.cell.seed: r.metrics[m] for r in rs if m in r.metrics}
            iv = t_interval(list(vals.values()), level)
            if name == baseline:
                diff_s, v = "(baseline)", ""
                d = None
            else:
                d = paired_difference(vals, {s: b.metrics[m] for s, b in base.items() if m in b.metrics}, level)
                diff_s = d.fmt() if d.n else "-"
                v = verdict(d, lower_is_better(m)) if d.n else "-"
            rows.append([m, name, iv.n, iv.fmt(), diff_s, v])
            summary.setdefault(name, {})[m] = {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n,
                                               **({"diff": d.mean, "diff_lo": d.lo, "diff_hi": d.hi,
                                                   "verdict": v} if d is not None and d.n else {})}
    return rows, metrics, summary


def compute_rows(groups: dict) -> list[list]:
    rows = []
    for name, rs in groups.items():
        c = [r.compute for r in rs]
        mean = lambda k: sum(x[k] for x in c) / len(c) if c else math.nan  # noqa: E731
        rows.append([name, len(rs), f"{mean('steps'):.1f}", _g(mean("tokens")), _g(mean("flops")),
                     f"{mean('wall_s'):.0f}", f"{mean('eval_s'):.0f}", f"{sum(x['cpu_h'] for x in c):.3f}",
                     f"{max(x['peak_mb'] for x in c):.0f}" if c else "-",
                     f"{sum(x['segments'] for x in c)}" + (f" ({sum(x['segments_without_usage'] for x in c)} killed)"
                                                            if any(x["segments_without_usage"] for x in c) else "")])
    return rows


def _html(md: str, images: dict[str, Path]) -> str:
    import markdown

    body = markdown.markdown(md, extensions=["tables"])
    for name, path in images.items():  # the PNGs are embedded: the file stands alone
        b64 = base64.b64encode(path.read_bytes()).decode()
        body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{b64}"')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f3f3f3}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>MaskLab sweep report</title>" \
           f"<style>{style}</style></head><body>{body}</body></html>"


def compare(sweep_dir: str | Path, baseline: Optional[str] = None, level: Optional[float] = None,
            out: Optional[str | Path] = None) -> dict:
    """Write report.md, report.html, the PNGs and summary.json into `out` (default SWEEP_DIR/report)."""
    from masklab.sweep.spec import load_spec

    sweep_dir = Path(sweep_dir)
    plan, results = read_sweep(sweep_dir)
    spec = load_spec(sweep_dir / "spec.yaml")
    level = level or spec.level
    groups = by_variant(results)
    baseline = baseline or spec.baseline or next(iter(groups))
    if baseline not in groups:
        raise MaskLabError(f"--baseline {baseline} is not a variant of this sweep ({', '.join(groups)})")
    unfinished = [r.cell for r in results if not r.trained]
    out = Path(out) if out else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows, metrics, summary = metric_rows(groups, baseline, level)
    images = {"loss_vs_tokens.png": plots.loss_curves(groups, "tokens", out / "loss_vs_tokens.png"),
              "loss_vs_flops.png": plots.loss_curves(groups, "flops", out / "loss_vs_flops.png")}
    if metrics:
        images["metrics.png"] = plots.metric_bars(groups, metrics, level, out / "metrics.png")
        if len(groups) > 1:
            images["paired_diffs.png"] = plots.paired_diffs(summary, baseline, metrics, level, out / "paired_diffs.png")
    if any(r.schedule != "constant" for r in results):
        images["mask_rate.png"] = plots.mask_rates(groups, out / "mask_rate.png")
    seeds = sorted({r.cell.seed for r in results})
    md = [f"# Sweep `{spec.name}`", ""]
    if spec.note:
        md += [spec.note.strip(), ""]
    md += [f"- base config `{spec.base}`, {len(groups)} variants x {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
           f"compute equalised on **{plan['equalise']}**" + (f" ({plan['amount']:.4g} per cell)"
                                                             if plan["equalise"] != "none" else ""),
           f"- baseline `{baseline}`; intervals: {level:.0%} Student t over seeds; differences are paired by seed "
           f"(t-interval of the per-seed differences). With few seeds the intervals are wide: 'within noise' "
           f"means the interval of the difference contains 0, not that the variants are equal.",
           f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"]
    if unfinished:
        md += [f"- **{len(unfinished)} cell(s) not finished**: " + ", ".join(c.name for c in unfinished)]
    md += ["", "## Metrics", "",
           _table(["metric", "variant", "n", f"mean [{level:.0%} CI]", "paired diff to baseline [CI]", "verdict"], rows)
           if rows else "(no metrics yet)", "",
           "Lower is better for loss, pseudo-perplexity and FPR; higher for the others. `val_loss` is the training "
           "run's last held-out evaluation; `mlm_*` / PLL come from `masklab evaluate` (fixed 15% token masking).",
           "", "## Compute per variant (mean per cell; CPU hours summed over seeds)", "",
           _table(["variant", "cells", "steps", "real tokens", "FLOPs", "train wall s", "eval s", "train CPU h", "peak MB", "segments"],
                  compute_rows(groups)), "",
           "FLOPs: executed matmul FLOPs of forward + backward from the model's own formula "
           "(pretrain/loop/flops.py), counted on the rows each layer runs. Segments: training processes, summed over "
           "the variant's cells (more than one per cell: resumed after a stop); a killed segment (SIGKILL) "
           "leaves no usage record, so wall and CPU hours are then lower bounds.", "", "## Plots", ""]
    md += [f"![{n}]({n})" for n in images]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(text, images))
    (out / "summary.json").write_text(json.dumps({"baseline": baseline, "level": level, "metrics": summary,
                                                  "compute": {r[0]: r[1:] for r in compute_rows(groups)}},
                                                 indent=1, default=str))
    return {"out": str(out), "variants": list(groups), "metrics": metrics, "unfinished": len(unfinished)}
