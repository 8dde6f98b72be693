"""One markdown report + plots for any set of runs side by side.

A run directory (written by `classify`, `classify --test-embeddings` (cross-source) or
`finetune`) holds results.json {"kind", "source", "encoder", "results": {name: {summary,
ci, oof: {score}, confusion}}}, labels.npy (int [n]) and texts.jsonl (n rows: text +
columns such as lang) aligned with the scores. Each (run dir, classifier) is one row.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.run_files import atomic_dir, read_json, write_json
from masklab.errors import MaskLabError

log = logging.getLogger("masklab.downstream")
COLUMNS = [("accuracy", "Acc"), ("precision", "Prec"), ("recall", "Rec"), ("f1", "F1"), ("roc_auc", "ROC-AUC"),
           ("pr_auc", "PR-AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"), ("fpr_at_target_tpr_threshold", "FPR@TPR-target thr"),
           ("fpr_at_target_fpr_threshold", "FPR@FPR-target thr"), ("tpr_at_target_fpr_threshold", "TPR@FPR-target thr")]
# run directories written before the threshold columns were named after their threshold
LEGACY = {"fpr_at_val_threshold": "fpr_at_target_tpr_threshold", "tpr_at_val_threshold": "tpr_at_target_tpr_threshold",
          "fpr_at_target_fpr": "fpr_at_target_fpr_threshold", "tpr_at_target_fpr": "tpr_at_target_fpr_threshold"}


@dataclass
class Run:
    label: str
    y: np.ndarray  # int [n]
    score: np.ndarray  # log-odds [n]
    texts: list[str]
    columns: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # metric -> {mean, sd}
    ci: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    run_dir: Optional[Path] = None


def load_runs(dirs: Sequence[str | Path], classifiers: Optional[Sequence[str]] = None) -> list[Run]:
    """One Run per (run dir, classifier); `classifiers` keeps only those names."""
    runs = []
    for d in map(Path, dirs):
        if not (d / "results.json").is_file():
            raise MaskLabError(f"{d} is not a run directory (no results.json from classify/finetune)")
        res = read_json(d / "results.json")
        y = np.load(d / "labels.npy")
        rows = [json.loads(line) for line in (d / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
        cols = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("text", "label")} if rows else {}
        names = {str(k): v for k, v in (res.get("label_names") or {}).items()}
        for name, r in res["results"].items():
            if classifiers and name not in classifiers:
                continue
            summary = {LEGACY.get(k, k): v for k, v in r.get("summary", {}).items()}
            runs.append(Run(f"{d.name}:{name}", y, np.asarray(r["oof"]["score"], dtype=np.float64),
                            [r_["text"] for r_ in rows], cols, summary, r.get("ci", {}),
                            {"kind": res.get("kind"), "source": res.get("source"), "encoder": res.get("encoder", {}),
                             "seconds": r.get("seconds"), "label_names": names,
                             "operating_point": (r.get("thresholds") or {}).get("operating_point")}, d))
    if not runs:
        raise MaskLabError("no runs to report" + (f" (none of the classifiers {list(classifiers)})" if classifiers else ""))
    return runs


def _fmt(s: Optional[dict]) -> str:
    if not s:
        return "–"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s.get("n", 2) > 1 else f"{s['mean']:.3f}"


def _cell(text: str, n: int = 160) -> str:
    t = " ".join(str(text).split())
    t = t[:n] + ("…" if len(t) > n else "")
    return t.replace("|", "\\|")


def metrics_table(runs: list[Run]) -> list[str]:
    head = "| run | source | encoder | n | " + " | ".join(c for _, c in COLUMNS) + " | ROC-AUC 95% CI |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    for r in runs:
        enc = r.info.get("encoder") or {}
        rnd = ", random init" if enc.get("random_init") else ""
        enc_s = f"{enc.get('path') or enc.get('kind', '')} ({enc.get('pooling', '-')}{rnd})" if enc else "-"
        ci = r.ci.get("roc_auc")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"
        lines.append(f"| {r.label} | {r.info.get('source')} | {enc_s} | {len(r.y)} | "
                     + " | ".join(_fmt(r.summary.get(k)) for k, _ in COLUMNS) + f" | {ci_s} |")
    return lines


def operating_points(runs: list[Run]) -> list[str]:
    """The evidence behind each run's target-FPR threshold (runs that chose one)."""
    from masklab.downstream.evaluation.operating import MIN_BEYOND

    ops = [(r, r.info.get("operating_point")) for r in runs]
    ops = [(r, op) for r, op in ops if op and op.get("target_fpr") and op.get("n_benign")]
    if not ops:
        return []
    lines = ["| run | threshold | target FPR | set on | benign rows | beyond it | FPR upper 95% |", "|---|---|---|---|---|---|---|"]
    for r, op in ops:
        weak = " (fewer than %d: weak)" % MIN_BEYOND if op["n_beyond"] < MIN_BEYOND else ""
        lines.append(f"| {r.label} | {op['threshold']:.4f} | {op['target_fpr']:g} | {_cell(op['chosen_on'], 60)} | "
                     f"{op['n_benign']} | {op['n_beyond']}{weak} | {op['fpr_upper95']:.4f} |")
    return lines


def per_language(runs: list[Run], column: str = "lang") -> list[str]:
    """Accuracy / F1 / ROC-AUC of the out-of-fold scores per value of `column`."""
    lines = []
    for r in runs:
        if column not in r.columns:
            continue
        vals = np.asarray([str(v) for v in r.columns[column]])
        lines += [f"**{r.label}**", "", f"| {column} | n | malicious | accuracy | F1 | ROC-AUC |", "|---|---|---|---|---|---|"]
        for v in sorted(set(vals), key=lambda x: (-(vals == x).sum(), x)):
            i = vals == v
            y, s = r.y[i], r.score[i]
            pred = (s >= 0).astype(int)
            acc = float((pred == y).mean())
            from sklearn.metrics import f1_score, roc_auc_score

            f1 = f1_score(y, pred, zero_division=0)
            auc = f"{roc_auc_score(y, s):.3f}" if len(np.unique(y)) == 2 else "–"
            lines.append(f"| {v} | {int(i.sum())} | {int(y.sum())} | {acc:.3f} | {f1:.3f} | {auc} |")
        lines.append("")
    return lines


def misclassified(runs: list[Run], k: int = 10) -> list[str]:
    lines = []
    for r in runs:
        wrong = np.flatnonzero((r.score >= 0).astype(int) != r.y)
        wrong = wrong[np.argsort(-np.abs(r.score[wrong]))][:k]  # most confident mistakes first
        lines += [f"**{r.label}**: {int(((r.score >= 0).astype(int) != r.y).sum())} of {len(r.y)} misclassified"
                  + (f"; the {len(wrong)} most confident:" if len(wrong) else ""), ""]
        if len(wrong):
            extra = [c for c in ("lang", "category") if c in r.columns]
            lines += ["| true | score | " + " | ".join(extra) + (" | " if extra else "") + "text |",
                      "|---|---|" + "---|" * len(extra) + "---|"]
            for i in wrong:
                ex = " | ".join(str(r.columns[c][i]) for c in extra) + (" | " if extra else "")
                lines.append(f"| {_label(r, int(r.y[i]))} | {r.score[i]:+.2f} | {ex}{_cell(r.texts[i])} |")
        lines.append("")
    return lines


def _label(r: Run, v: int) -> str:
    return (r.info.get("label_names") or {}).get(str(v)) or ("malicious" if v else "benign")


def _scores_kind(runs: list[Run]) -> str:
    """What the scores are: out-of-fold (CV runs), held-out test scores, or both."""
    cv = {r.info.get("kind") in ("classify", "finetune_cv") for r in runs}
    return "out-of-fold" if cv == {True} else "held-out test" if cv == {False} else "out-of-fold / held-out test"


def measure_latency(bundle, texts: Sequence[str], n_single: int = 30, batch_size: int = 32) -> dict:
    """Wall time per prompt (ms) for the whole path text -> embedding -> score.
    single: one prompt per call; batched: calls of `batch_size`, time / batch_size."""
    texts = list(texts)
    bundle.predict(texts[:2])  # warm-up: model load, first-call allocations
    single = []
    for t in texts[:n_single]:
        t0 = time.perf_counter()
        bundle.predict([t])
        single.append((time.perf_counter() - t0) * 1e3)
    batched = []
    for s in range(0, len(texts), batch_size):
        part = texts[s:s + batch_size]
        t0 = time.perf_counter()
        bundle.predict(part)
        batched.append((time.perf_counter() - t0) * 1e3 / len(part))
    q = lambda v, p: float(np.percentile(v, p))  # noqa: E731
    return {"single_p50_ms": q(single, 50), "single_p95_ms": q(single, 95),
            "batched_p50_ms": q(batched, 50), "batched_p95_ms": q(batched, 95), "batch_size": batch_size}


def plots(runs: list[Run], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    kind = _scores_kind(runs)
    # distinct colour x line style per run: tab10 alone repeats after 10 runs
    styles = [(plt.get_cmap("tab10")(i % 10), ("-", "--", ":", "-.")[(i // 10) % 4]) for i in range(len(runs))]
    for fname, log_x in (("roc.png", False), ("roc_low_fpr.png", True)):
        fig, ax = plt.subplots(figsize=(9, 5))
        for r, (c, ls) in zip(runs, styles):
            fpr, tpr, _ = roc_curve(r.y, r.score)
            ax.plot(fpr, tpr, color=c, ls=ls, label=f"{r.label} (AUC {M.binary_metrics(r.y, r.score)['roc_auc']:.3f})")
        if log_x:  # the operating region: from one benign false positive up to 10%
            ax.set_xscale("log")
            ax.set_xlim(1.0 / max(int((r.y == 0).sum()) for r in runs), 0.1)
        else:
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate (benign flagged)" + (", log scale" if log_x else ""),
               ylabel="true positive rate", title=f"ROC ({kind})" + (", low-FPR region" if log_x else ""))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, never over curves
        fig.tight_layout(), fig.savefig(out / fname, dpi=120), plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 5))
    for r, (c, ls) in zip(runs, styles):
        p, rc, _ = precision_recall_curve(r.y, r.score)
        ax.plot(rc, p, color=c, ls=ls, label=r.label)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({kind})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(), fig.savefig(out / "pr.png", dpi=120), plt.close(fig)

    cols = min(len(runs), 4)
    rows = (len(runs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax, r in zip(axes.flat, runs):
        cm = np.asarray(M.confusion(r.y, (r.score >= 0).astype(int)))
        ax.imshow(cm, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(cm):  # white on dark cells, black on light ones
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ticks = [_label(r, 0), _label(r, 1)]
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=ticks, yticklabels=ticks,
               xlabel="predicted", ylabel="true", title=r.label[:40])
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout(), fig.savefig(out / "confusion.png", dpi=120), plt.close(fig)
    return ["roc.png", "roc_low_fpr.png", "pr.png", "confusion.png"]


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, latency: bool = False, k_errors: int = 10,
                 title: str = "Detection report", classifiers: Optional[Sequence[str]] = None) -> Path:
    """Write out_dir/report.md + roc.png, roc_low_fpr.png, pr.png, confusion.png (+ summary.json),
    for the runs' classifiers (or only `classifiers`). Atomic."""
    runs = load_runs(run_dirs, classifiers)
    lat = {}
    if latency:
        from masklab.downstream.classifiers.bundle import load_bundle

        for d in dict.fromkeys(r.run_dir for r in runs):
            if (d / "bundle" / "bundle.json").is_file():
                b = load_bundle(d / "bundle")
                lat[f"{d.name}:{b.info['classifier']}"] = measure_latency(b, next(r.texts for r in runs if r.run_dir == d))
    with atomic_dir(out_dir) as tmp:
        files = plots(runs, tmp)
        kind = _scores_kind(runs)
        md = [f"# {title}", "", f"{len(runs)} run(s). Scores are {kind} log-odds (threshold 0). Cross-validation "
              "runs: mean ± sd over folds × seeds, CI from a seeded bootstrap of the pooled out-of-fold scores; "
              "train/val/test and fine-tune runs: one value per test set, CI from a bootstrap of its scores. "
              "FPR@TPR-target thr / FPR@FPR-target thr: benign false-positive rate at the threshold chosen on "
              "validation data only for the target TPR (e.g. 95%) / for the target FPR; TPR@FPR-target thr: the "
              "malicious rows caught at the latter.", "", "## Metrics", "", *metrics_table(runs), "",
              "## Plots", "", *[f"![{f}]({f})" for f in files], ""]
        if lat:
            md += ["## Latency (ms per prompt, text -> embedding -> score)", "",
                   "| bundle | single p50 | single p95 | batched p50 | batched p95 |", "|---|---|---|---|---|"]
            md += [f"| {k} | {v['single_p50_ms']:.1f} | {v['single_p95_ms']:.1f} | {v['batched_p50_ms']:.2f} | "
                   f"{v['batched_p95_ms']:.2f} |" for k, v in lat.items()] + [""]
        ops = operating_points(runs)
        if ops:
            md += ["## Operating points", "", "Each target-FPR threshold with the benign rows it was set on, how many "
                   "lie beyond it, and the exact one-sided Clopper-Pearson 95% upper bound on the FPR they imply "
                   "(about 10 / target benign rows are needed for 10 beyond it).", "", *ops, ""]
        lang = per_language(runs)
        if lang:
            md += ["## Per language", "", *lang]
        md += ["## Misclassified examples", "", *misclassified(runs, k_errors)]
        (tmp / "report.md").write_text("\n".join(md), encoding="utf-8")
        write_json(tmp / "summary.json", {"runs": [{"label": r.label, "summary": r.summary, "ci": r.ci,
                                                    "info": r.info} for r in runs], "latency": lat})
    return Path(out_dir) / "report.md"
