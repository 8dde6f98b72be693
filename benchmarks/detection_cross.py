"""Cross-source rows of the detection benchmark: train on one kind of prompt, test on another.

bastioncorpus has two natural source splits (its own columns):
- channel: direct prompts (`user_input`) -> injections arriving inside tool output or memory;
- language: English -> German, French, Spanish and Italian.
For each split the classifier is fitted on the training source only; model choice, the
threshold for a target FPR and the calibration come from a validation split carved from the
training source (`downstream.crosssource.evaluate`, what `masklab classify --train --test` runs);
the other source is scored once. Fine-tuned MiniLM early-stops on the same kind of carve.
"""
from __future__ import annotations

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
          f"test FPR @ val thr ({TARGET_FPR:.0%} FPR)", f"test TPR @ val thr ({TARGET_FPR:.0%} FPR)", "s"]


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
            seconds = (time.time() - t0) / len(names)
            for n in names:
                s = res["tests"]["test"][n]["summary"]
                rows.append([split_name, sizes, label, n, *(f"{s[k]['mean']:.3f}" if k in s else "-" for k in COLS),
                             f"{seconds:.0f}"])
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
                rows.append([split_name, sizes, label, "finetune_cls", *(f"{m[k]:.3f}" for k in COLS),
                             f"{time.time() - t0:.0f}"])
    return rows
