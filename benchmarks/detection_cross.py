"""Cross-source rows of the detection benchmark: train on one kind of prompt, test on another.

bastioncorpus has two natural source splits (its own columns):
- channel: direct prompts (`user_input`) -> injections arriving inside tool output or memory;
- language: English -> German, French, Spanish and Italian.
For each split the classifier is fitted on the training source only; model choice, the
threshold for a target FPR and the calibration come from a validation split carved from the
training source (`downstream.crosssource.evaluate`, what `masklab classify --train --test` runs);
the other source is scored once. Fine-tuned MiniLM early-stops on the same kind of carve.

Every row carries the evidence for its threshold: the benign validation rows beyond it out of
those it was set on, and the one-sided Clopper-Pearson 95% upper bound on the FPR they imply.
Ensemble rows combine every classifier of the split (embedding classifiers and TF-IDF, which
share one validation carve: same rows, same seed) with `downstream.ensemble`'s rank average and
its 2-fold cross-fitted logistic stack (thresholds on the stack's out-of-fold validation scores).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

SPLITS = {
    "channel: user_input -> tool_output/memory": ("channel", {"user_input"}),
    "lang: en -> de/fr/es/it": ("lang", {"en"}),
}
TARGET_FPR = 0.05  # the test sets hold 10-15 benign rows: 1% FPR cannot be resolved there
COLS = ["roc_auc", "pr_auc", "tpr_at_1pct_fpr", "fpr_at_target_fpr_threshold", "tpr_at_target_fpr_threshold"]
HEADER = ["split (train -> test)", "n train / test", "features", "classifier", "ROC-AUC", "PR-AUC", "TPR @ 1% FPR",
          f"test FPR @ val thr ({TARGET_FPR:.0%} FPR)", f"test TPR @ val thr ({TARGET_FPR:.0%} FPR)",
          "val benign beyond thr / n", "FPR upper 95% (val)", "s"]


def _evidence(op: dict | None) -> list[str]:
    """The threshold's evidence cells: benign rows beyond / n, and the Clopper-Pearson bound."""
    if not op or op.get("n_benign") is None:
        return ["-", "-"]
    warn = " (weak)" if op.get("warning") else ""
    return [f"{op['n_beyond']} / {op['n_benign']}{warn}", f"{op['fpr_upper95']:.3f}"]


def ensemble_rows(split_name: str, sizes: str, members: dict, y_val: np.ndarray, y_test: np.ndarray) -> list[list]:
    """members: {label: (validation scores [n_val], test scores [n_test])} -> rank / stack rows."""
    from masklab.downstream.ensemble import crossfit_stack, rank_scores, stack_scores
    from masklab.downstream.evaluation import metrics as M
    from masklab.downstream.evaluation import operating as OP

    if len(members) < 2:
        return []
    t0 = time.time()
    V = np.stack([v for v, _ in members.values()], axis=1)
    T = np.stack([t for _, t in members.values()], axis=1)
    refs = [np.sort(V[:, j]) for j in range(V.shape[1])]
    stack, oof = crossfit_stack(V, y_val, 2, 0)
    label = f"ensemble of {len(members)}: " + ", ".join(members)
    rows = []
    for name, s_val, s_test in (("rank average", rank_scores(V, refs), rank_scores(T, refs)),
                                ("logistic stack (2-fold cross-fitted)", oof, stack_scores(T, stack))):
        op = OP.choose(y_val, s_val, TARGET_FPR, "validation", warn=False)
        m = M.binary_metrics(y_test, s_test)
        r = M.rates_at_threshold(y_test, s_test, op["threshold"])
        rows.append([split_name, sizes, label, name, *(f"{m[k]:.3f}" for k in COLS[:3]), f"{r['fpr']:.3f}",
                     f"{r['tpr']:.3f}", *_evidence(op), f"{time.time() - t0:.0f}"])
    return rows


def _split_rows(data, column: str, train_values: set) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray([str(v) for v in data.columns[column]])
    train = np.isin(values, sorted(train_values))
    return np.flatnonzero(train), np.flatnonzero(~train)


def cross_source_rows(data, features: dict, quick: bool, finetune_model: str | None, finetune_cfg=None) -> list[list]:
    """features: {label: (X float32 [N, D] or None for raw text, [classifier names], Settings)}."""
    from masklab.downstream.evaluation.crosssource import Split, evaluate

    rows = []
    records = data.to_records()
    for split_name, (column, train_values) in SPLITS.items():
        tr, te = _split_rows(data, column, train_values)
        sizes = f"{len(tr)} / {len(te)} ({int(data.labels[te].sum())} malicious)"
        members, y_val, val_rows = {}, None, None
        for label, (X, names, settings) in features.items():
            def part(idx, name):
                return Split(name, None if X is None else X[idx], [data.texts[i] for i in idx], data.labels[idx],
                             [records[i] for i in idx], {"source": f"bastion:{name}", "encoder": {"path": label},
                                                         "label_names": data.label_names})

            t0 = time.time()
            with tempfile.TemporaryDirectory() as out:
                res = evaluate(part(tr, "train"), [part(te, "test")], Path(out) / "r", names, settings=settings,
                               target_fpr=TARGET_FPR,
                               n_boot=0, save=None, val_fraction=0.25)
                val_run = json.loads((Path(out) / "r" / "validation" / "results.json").read_text())["results"]
                y_here = np.load(Path(out) / "r" / "validation" / "labels.npy")
                rows_here = (Path(out) / "r" / "validation" / "texts.jsonl").read_text()
            # ensemble members must be scored on the same validation rows (one carve: same rows, same seed)
            if y_val is not None and rows_here != val_rows:
                raise RuntimeError(f"{split_name}: {label}'s validation carve differs from the other features'")
            y_val, val_rows = y_here, rows_here
            seconds = (time.time() - t0) / len(names)
            for n in names:
                s = res["tests"]["test"][n]["summary"]
                rows.append([split_name, sizes, label, n, *(f"{s[k]['mean']:.3f}" if k in s else "-" for k in COLS),
                             *_evidence(res["operating_points"][n]), f"{seconds:.0f}"])
                members[f"{n} ({label.split(' (')[0]})"] = (np.asarray(val_run[n]["oof"]["score"]),
                                                            np.asarray(res["tests"]["test"][n]["oof"]["score"]))
        rows += ensemble_rows(split_name, sizes, members, y_val, data.labels[te])
        if finetune_model and not quick:
            from dataclasses import replace

            from masklab.downstream.finetuning.run import finetune

            base = replace(finetune_cfg, target_fpr=TARGET_FPR)
            for label, cfg in (("MiniLM-L6 fine-tuned", base),
                               ("MiniLM-L6 fine-tuned + pydoc carriers, chunked",
                                replace(base, augment="pydoc", augment_copies=2, long="chunk"))):
                t0 = time.time()
                with tempfile.TemporaryDirectory() as out:
                    r = finetune(finetune_model, data.subset(tr), Path(out) / "ft", cfg, test_data=[data.subset(te)])
                m = next(iter(r["tests"].values()))
                rows.append([split_name, sizes, label, f"finetune_{cfg.pooling or 'mean'}",
                             *(f"{m[k]:.3f}" for k in COLS), *_evidence(r["operating_point"]),
                             f"{time.time() - t0:.0f}"])
    return rows
