"""Choosing the model to save, and the benign rows thresholds are set on.

Selection (`--select-by`): `auc` ranks by validation ROC-AUC; `tpr_at_fpr` by the validation
TPR at the target-FPR threshold (what an operator gets at the operating point), ROC-AUC
breaking ties. The validation table it chose from is printed with the choice.

Threshold data (`--threshold-data FILE`): benign rows used only to set thresholds (your own
traffic): an embeddings dir (its benign rows) or a data file (every row, or its benign rows
when it has a label column). Raw text meets a classifier that needs embeddings through the
training encoder (its spec in the embeddings' meta.json).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from masklab.errors import MaskLabError

SELECT_BY = ("auc", "tpr_at_fpr")


def select(table: dict, select_by: str = "auc") -> str:
    """table: {name: {metric: {mean, ...}}} (validation summaries) -> the chosen name."""
    if select_by not in SELECT_BY:
        raise MaskLabError(f"--select-by must be one of {', '.join(SELECT_BY)}, not '{select_by}'")

    def key(name):
        s = table[name]
        auc = s["roc_auc"]["mean"]
        if select_by == "auc":
            return (auc,)
        t = s.get("tpr_at_target_fpr_threshold") or s.get("tpr_at_1pct_fpr")
        return (t["mean"], auc)

    return max(table, key=key)


def selection_table(table: dict, chosen: Optional[str], select_by: str) -> str:
    """Plain-text validation table with the chosen row marked."""
    cols = ("roc_auc", "tpr_at_1pct_fpr", "tpr_at_target_fpr_threshold")
    lines = [f"validation table (--select-by {select_by}):", f"  {'model':<24}" + "".join(f"{c:>30}" for c in cols)]
    for name, s in table.items():
        cells = "".join(f"{s[c]['mean']:>30.3f}" if c in s else f"{'-':>30}" for c in cols)
        lines.append(f"{'*' if name == chosen else ' '} {name:<24}{cells}")
    return "\n".join(lines)


class ThresholdData:
    """Benign rows for thresholds: texts, and embeddings X float32 [n, D] when they came as a dir."""

    def __init__(self, path: str | Path, data_kw: Optional[dict] = None):
        p = Path(path)
        self.name, self.X = f"--threshold-data {p}", None
        if p.is_dir():
            from masklab.downstream.pipeline import load_embeddings

            X, y, records, self.meta = load_embeddings(p)
            keep = np.flatnonzero(np.asarray(y) == 0)
            self.X, self.texts = X[keep], [str(records[i].get("text", "")) for i in keep]
        else:
            from masklab.downstream.predict import read_threshold_texts

            kw = data_kw or {}
            self.texts = read_threshold_texts(str(p), kw.get("text_column", "text"), kw.get("label_column", "label"),
                                              kw.get("positive_label"))
        if not self.texts:
            raise MaskLabError(f"{self.name} holds no benign rows")

    def features(self, clf_name: str, encoder_spec: dict):
        """What classifier `clf_name` scores: texts for tfidf, else embeddings (computed once)."""
        if clf_name == "tfidf":
            return np.asarray(self.texts, dtype=object)
        if self.X is None:
            from masklab.downstream.encoders.load import encoder_from_spec

            self.X = encoder_from_spec(encoder_spec).encode(self.texts)
        return self.X
