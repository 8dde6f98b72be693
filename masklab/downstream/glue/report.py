"""The GLUE summary people read: `<out>/results.json` (every cell's score, per-task median),
`results.md` (rows: tasks; columns: seeds, median, and the average over the tasks run, which
names them: a subset is never called "GLUE"), `results.png` (bars: tasks x models, median with the
seeds' min-max). `--baseline OTHER/results.json` adds the difference of medians and a 95%
interval for the difference of means (Welch's t over seeds; with 3 seeds it is wide)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from masklab.downstream.glue.tasks import ORDER

NAMES = {"cola": "CoLA (MCC)", "sst2": "SST-2 (acc)", "mrpc": "MRPC (F1/acc)", "stsb": "STS-B (P/S corr)",
         "qqp": "QQP (F1/acc)", "mnli": "MNLI (m/mm acc)", "qnli": "QNLI (acc)", "rte": "RTE (acc)"}


def summarise(cells: list[dict], tasks: list[str], seeds: list[int]) -> dict:
    per = {}
    for t in tasks:
        cs = sorted((c for c in cells if c["task"] == t), key=lambda c: seeds.index(c["seed"]) if c["seed"] in seeds else 0)
        scores = {str(c["seed"]): c["score"] for c in cs}
        per[t] = {"scores": scores, "median": statistics.median(scores.values()) if scores else None,
                  "dev": {str(c["seed"]): c["dev"] for c in cs},
                  "train": cs[0]["data"]["train"] if cs else None, "wall_s": sum(c.get("wall_s", 0) for c in cs)}
    done = [t for t in tasks if per[t]["median"] is not None]
    avg = statistics.fmean(per[t]["median"] for t in done) if done else None
    full = set(done) == set(ORDER)
    first = cells[0] if cells else {}
    return {"model": first.get("model"), "recipe": first.get("recipe"), "seeds": seeds, "tasks": per,
            "average": avg, "average_over": done, "average_label": average_label(done, full),
            "wall_s": sum(per[t]["wall_s"] for t in tasks)}


def average_label(tasks: list[str], full: bool) -> str:
    if full:
        return "GLUE average (all 8 tasks; MNLI = mean of m/mm)"
    return f"Average over {len(tasks)} task(s): {', '.join(tasks)} (not the GLUE average)"


def _welch(a: list[float], b: list[float]) -> Optional[tuple[float, float]]:
    """95% interval for mean(a) - mean(b) (Welch's t); None with fewer than 2 seeds on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    d = statistics.fmean(a) - statistics.fmean(b)
    se = (va + vb) ** 0.5
    if se == 0:
        return (d, d)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(stats.t.ppf(0.975, df)) * se
    return (d - h, d + h)


def markdown(s: dict, baseline: Optional[dict] = None) -> str:
    seeds = [str(x) for x in s["seeds"]]
    head = ["task", *[f"seed {x}" for x in seeds], "median", "metrics (mean over seeds)", "wall s"]
    if baseline:
        head += ["baseline median", "diff (median)", "95% CI of diff (means)"]
    lines = [f"GLUE dev results: model `{s['model']}`, recipe `{s['recipe']}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, r in s["tasks"].items():
        row = [NAMES.get(t, t), *[f"{r['scores'][x]:.2f}" if x in r["scores"] else "-" for x in seeds],
               "-" if r["median"] is None else f"{r['median']:.2f}", _metrics(r.get("dev", {})),
               f"{r.get('wall_s', 0):.0f}"]
        if baseline:
            b = baseline["tasks"].get(t)
            if b and b.get("median") is not None and r["median"] is not None:
                ci = _welch(list(r["scores"].values()), list(b["scores"].values()))
                row += [f"{b['median']:.2f}", f"{r['median'] - b['median']:+.2f}",
                        f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "n/a (< 2 seeds)"]
            else:
                row += ["-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    if s["average"] is not None:
        row = [f"**{s['average_label']}**", *[""] * len(seeds), f"**{s['average']:.2f}**", "", ""]
        if baseline:
            common = [t for t in s["average_over"] if baseline["tasks"].get(t, {}).get("median") is not None]
            bavg = statistics.fmean(baseline["tasks"][t]["median"] for t in common) if common else None
            ours = statistics.fmean(s["tasks"][t]["median"] for t in common) if common else None
            row += [f"{bavg:.2f}" if bavg is not None else "-",
                    f"{ours - bavg:+.2f} (over {', '.join(common)})" if common else "-", ""]
        lines.append("| " + " | ".join(row) + " |")
    notes = sorted({r["train"] for r in s["tasks"].values() if r["train"] and "subsampled" in r["train"]})
    lines += ["", "Scores x 100; a task's score is the mean of its metrics (MRPC/QQP: F1 and accuracy; STS-B: "
              "Pearson and Spearman; MNLI: matched and mismatched accuracy). Median over seeds; with 3 seeds a "
              "confidence interval is wide.", f"Wall time of the cells: {s['wall_s']:.0f} s."]
    lines += [f"Training data subsampled: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _metrics(dev: dict) -> str:
    """{seed: {split: {metric: v}}} -> 'f1 88.10, acc 83.20' (MNLI: per split), means over seeds."""
    per: dict = {}
    for splits in dev.values():
        for split, ms in splits.items():
            for m, v in ms.items():
                if m != "score":
                    per.setdefault((split, m), []).append(v)
    multi = len({k[0] for k in per}) > 1
    return ", ".join(f"{(sp.replace('dev_', '') + ' ') if multi else ''}{m} {statistics.fmean(v):.2f}"
                     for (sp, m), v in per.items())


def chart(summaries: list[tuple[str, dict]], path: Path) -> None:
    """Grouped bars (tasks x models): median, error bar = min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = [t for t in summaries[0][1]["tasks"] if summaries[0][1]["tasks"][t]["median"] is not None]
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(tasks) * len(summaries)), 3.5))
    w = 0.8 / len(summaries)
    for i, (label, s) in enumerate(summaries):
        med, lo, hi = [], [], []
        for t in tasks:
            r = s["tasks"].get(t) or {"scores": {}, "median": None}
            v = list(r["scores"].values())
            m = r["median"] if r["median"] is not None else np.nan
            med.append(m), lo.append(m - min(v) if v else 0), hi.append(max(v) - m if v else 0)
        ax.bar(np.arange(len(tasks)) + i * w, med, w, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(np.arange(len(tasks)) + w * (len(summaries) - 1) / 2, tasks)
    ax.set_ylabel("dev score (median over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(out, cells: list[dict], tasks: list[str], seeds: list[int], baseline: Optional[str] = None) -> dict:
    from masklab.downstream.run_files import atomic_file

    out = Path(out)
    s = summarise(cells, tasks, seeds)
    b = load_baseline(baseline) if baseline else None
    atomic_file(out / "results.json", json.dumps(s, indent=1))
    md = markdown(s, b)
    atomic_file(out / "results.md", md)
    models = [(Path(str(s["model"])).name or "model", s)] + ([(f"baseline: {Path(str(b['model'])).name}", b)] if b else [])
    chart(models, out / "results.png")
    s["markdown"] = md
    return s


def load_baseline(path: str) -> dict:
    from masklab.errors import MaskLabError

    p = Path(path)
    try:
        b = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MaskLabError(f"--baseline {p}: cannot read a GLUE results.json ({e})") from None
    if not isinstance(b, dict) or "tasks" not in b or "average" not in b:
        raise MaskLabError(f"--baseline {p} is not a `masklab glue` results.json (no tasks / average)")
    return b
