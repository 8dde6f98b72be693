"""The PNGs of `masklab compare` (matplotlib, Agg): loss curves with a seed band, metric bars with
error bars, realised mask rate against step."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from masklab.sweep.evaluations import lower_is_better
from masklab.sweep.stats import t_interval


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(curves: list[tuple[np.ndarray, np.ndarray]], n: int = 60):
    """Seeds' curves (x, y) -> (grid, mean, min, max) on the x range all seeds cover."""
    curves = [(x, y) for x, y in curves if len(x) >= 1 and np.all(np.isfinite(x))]
    if not curves:
        return None
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    if hi <= lo:  # a single point each (e.g. only the final evaluation)
        ys = np.array([c[1][-1] for c in curves])
        return np.array([hi]), ys.mean(keepdims=True), ys.min(keepdims=True), ys.max(keepdims=True)
    grid = np.linspace(lo, hi, n)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def loss_curves(groups: dict, axis: str, out: Path) -> Path:
    """Validation loss against tokens (axis=1) or FLOPs (axis=2) per variant: mean line + min-max band."""
    plt = _plt()
    idx, label = {"tokens": (1, "real tokens seen"), "flops": (2, "executed FLOPs (fwd + bwd)")}[axis]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, results in groups.items():
        curves = []
        for r in results:
            pts = [(p[idx], p[3]) for p in r.eval_curve if math.isfinite(p[idx])]
            if pts:
                curves.append((np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)))
        b = _band(curves)
        if b is None:
            continue
        grid, mean, lo, hi = b
        line, = ax.plot(grid, mean, label=f"{name} (n={len(curves)})", marker="o" if len(grid) == 1 else None)
        ax.fill_between(grid, lo, hi, alpha=0.2, color=line.get_color())
    ax.set_xlabel(label)
    ax.set_ylabel("validation MLM loss")
    ax.set_title(f"Validation loss vs {axis} (line: mean over seeds, band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def metric_bars(groups: dict, metrics: list[str], level: float, out: Path) -> Path:
    """One panel per metric: a bar per variant at the mean, error bar = the t-interval."""
    plt = _plt()
    k = len(metrics)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110, squeeze=False)
    names = list(groups)
    for i, m in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        iv = [t_interval([r.metrics.get(m) for r in groups[n]], level) for n in names]
        means = [v.mean for v in iv]
        err = [[v.mean - v.lo if v.n > 1 else 0 for v in iv], [v.hi - v.mean if v.n > 1 else 0 for v in iv]]
        finite = [x for x in means if math.isfinite(x)]
        lo = min([v.lo if v.n > 1 else v.mean for v in iv if v.n], default=0.0)
        hi = max([v.hi if v.n > 1 else v.mean for v in iv if v.n], default=1.0)
        pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-9
        base = lo - pad  # bars start at the panel's floor (from 0 they would hide the differences)
        ax.bar(range(len(names)), [x - base if math.isfinite(x) else 0 for x in means], bottom=base, yerr=err,
               capsize=4, color=[f"C{j}" for j in range(len(names))])
        for j, x in enumerate(means):  # e.g. val_loss of an untrained variant: say so, not a bar at the floor
            if not math.isfinite(x):
                ax.text(j, base + pad, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
        if finite:
            ax.set_ylim(base, hi + pad)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{m} ({'lower' if lower_is_better(m) else 'higher'} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"Mean over seeds, error bars: {level:.0%} t-interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def mask_rates(groups: dict, out: Path) -> Path:
    """Scheduled (dashed) and realised (solid, mean over seeds) masking rate against step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, results in groups.items():
        curves = [r.rate_curve for r in results if r.rate_curve]
        if not curves:
            continue
        steps = np.array([p[0] for p in curves[0]], float)
        n = min(len(c) for c in curves)
        realised = np.mean([[p[2] for p in c[:n]] for c in curves], axis=0)
        line, = ax.plot(steps[:n], realised, label=f"{name} realised")
        ax.plot(steps[:n], [p[1] for p in curves[0][:n]], "--", color=line.get_color(), alpha=0.7,
                label=f"{name} scheduled")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masking rate")
    ax.set_title("Masking rate against step (realised = predictions / maskable tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def paired_diffs(summary: dict, baseline: str, metrics: list[str], level: float, out: Path) -> Path:
    """One panel per metric: each variant's paired difference to the baseline (per-seed
    differences, t-interval) with a line at 0. This is what the verdicts read; the bars of
    `metric_bars` show each variant's own spread over seeds, which paired seeds partly cancel."""
    plt = _plt()
    names = [n for n in summary if n != baseline]
    k = len(metrics)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), dpi=110, squeeze=False)
    colour = {"better": "tab:green", "worse": "tab:red"}
    for i, m in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        for j, n in enumerate(names):
            r = summary[n].get(m, {})
            if "diff" not in r or not math.isfinite(r["diff_lo"]):
                ax.text(j, 0, "n/a", ha="center", va="center", fontsize=8, color="0.4")
                continue
            ax.errorbar([j], [r["diff"]], yerr=[[r["diff"] - r["diff_lo"]], [r["diff_hi"] - r["diff"]]], fmt="o",
                        capsize=4, color=colour.get(r.get("verdict"), "0.3"))
        ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(f"{m} ({'lower' if lower_is_better(m) else 'higher'} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"Paired difference to {baseline} ({level:.0%} t-interval over seeds; green better, red worse)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
