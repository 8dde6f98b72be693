"""`masklab predict`: score raw text with any saved detector, in one output schema.

Models: a classifier bundle (`classify`), a fine-tuned model directory (`finetune`) or an
ensemble (`ensemble`). Every kind writes the same row, jsonl or csv (ROW_FIELDS, in order):
  id                   the input's `id` column, else its row number (0-based; --text values first)
  score                log-odds of malicious (float)
  probability          calibrated P(malicious) (Platt/isotonic fitted on validation; models saved
                       without a calibration give sigmoid(score), flagged by `calibrated` in the log)
  label, label_name    1/0 at the threshold, and its name (e.g. malicious/benign)
  threshold            the log-odds threshold used (score >= threshold -> label 1)
  threshold_target_fpr the FPR it was chosen for (empty: not chosen for an FPR, e.g. 0)
  threshold_set        the data it was chosen on (validation, --threshold-data FILE, or default)
  text                 the input text
With labels in the input, the ranking and threshold metrics are reported too.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.evaluation import operating as OP
from masklab.errors import DataError, MaskLabError

log = logging.getLogger("masklab.downstream")
ROW_FIELDS = ("id", "score", "probability", "label", "label_name", "threshold", "threshold_target_fpr",
              "threshold_set", "text")
DEFAULT_NAMES = {"0": "benign", "1": "malicious"}


def sigmoid(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(s, dtype=np.float64), -500, 500)))


class Scorer(ABC):
    """The interface `predict` and `ensemble` use: scores(texts) -> log-odds float64 [N],
    probability(scores) -> [N], operating_point (operating.point dict), label_names."""
    kind = "model"
    name = "model"
    calibration: Optional[dict] = None
    operating_point: dict
    label_names: dict

    @abstractmethod
    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """texts -> log-odds float64 [N] (each model kind computes its own)."""

    def probability(self, s: np.ndarray) -> np.ndarray:
        if self.calibration:
            from masklab.downstream.classifiers.calibration import apply_calibration

            return apply_calibration(self.calibration, s)
        return sigmoid(s)

    @property
    def info(self) -> dict:
        return {"classifier": self.name, "threshold": self.operating_point["threshold"],
                "label_names": self.label_names}

    def predict(self, texts: Sequence[str]) -> dict:
        """-> {score [N], label int [N], probability [N]} at the current operating point."""
        s = self.scores(texts)
        return {"score": s, "label": (s >= self.operating_point["threshold"]).astype(np.int64),
                "probability": self.probability(s)}


def _legacy_point(threshold: float, target_fpr, chosen_on: str) -> dict:
    """Models saved before operating points carried their evidence: what is known of it."""
    if not target_fpr:
        return OP.default_point(threshold)
    return {**OP.default_point(threshold, chosen_on), "target_fpr": float(target_fpr), "n_benign": None,
            "n_beyond": None}


class BundleScorer(Scorer):
    kind = "bundle"

    def __init__(self, path: Path):
        from masklab.downstream.classifiers.bundle import load_bundle

        self.bundle = load_bundle(path)
        b = self.bundle.info
        self.name, self.calibration = b["classifier"], b.get("calibration")
        self.label_names = {**DEFAULT_NAMES, **{str(k): str(v) for k, v in (b.get("label_names") or {}).items()}}
        thr = b.get("thresholds") or {}
        self.operating_point = b.get("operating_point") or _legacy_point(
            b.get("threshold", 0.0), thr.get("target_fpr_value") if thr.get("target_fpr") is not None else None,
            f"validation ({b.get('validated_on', '?')})")

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        from masklab.downstream.classifiers.models import scores

        return scores(self.bundle.clf, self.bundle.features(texts))


class FinetunedScorer(Scorer):
    """A `finetune` output directory (out/model)."""
    kind = "finetune"

    def __init__(self, path: Path):
        from masklab.downstream.finetuning.model import load_finetuned

        self.model, self.tok, self.cfg = load_finetuned(path)
        self.name, self.calibration = f"finetune_{self.cfg.pooling}", self.cfg.calibration
        self.label_names = dict(DEFAULT_NAMES)
        self.operating_point = self.cfg.operating_point or _legacy_point(self.cfg.threshold, self.cfg.target_fpr,
                                                                         "validation")

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        from masklab.downstream.finetuning.training import predict_logodds

        return predict_logodds(self.model, self.tok, list(texts), self.cfg)


def load_model(path: str | Path) -> Scorer:
    """A bundle dir (bundle.json), an ensemble dir (ensemble.json), a finetune model dir
    (masklab_finetune.json) or a finetune run dir (its model/ subdirectory)."""
    p = Path(path)
    if (p / "bundle.json").is_file():
        return BundleScorer(p)
    if (p / "ensemble.json").is_file():
        from masklab.downstream.ensemble import load_ensemble

        return load_ensemble(p)
    for d in (p, p / "model"):
        if (d / "masklab_finetune.json").is_file():
            return FinetunedScorer(d)
    raise MaskLabError(f"{p} is neither a classifier bundle (bundle.json), an ensemble (ensemble.json) nor a "
                       "fine-tuned model (masklab_finetune.json, from `masklab finetune`)")


def read_texts(data: Optional[str], texts: Sequence[str], text_column: str = "text", label_column: str = "label",
               positive_label: Optional[str] = None, id_column: str = "id"
               ) -> tuple[list[str], Optional[np.ndarray], list]:
    """--text values plus the rows of --data: a .txt file (one prompt per line) or a labelled
    file (its text column; labels are used for metrics when the label column exists).
    -> (texts, labels int [N] or None, ids: the `id_column` values, else row numbers)."""
    out, labels = list(texts or []), None
    ids: list = list(range(len(out)))
    if data:
        p = Path(data)
        if p.suffix.lower() == ".txt":
            if not p.is_file():
                raise DataError(f"data file not found: {p}")
            lines = [line.rstrip("\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
            ids += list(range(len(out), len(out) + len(lines)))
            out += lines
        else:
            from masklab.downstream.data.labelled import map_labels, read_local

            rows = read_local(p)
            if not rows or text_column not in rows[0]:
                found = ", ".join(rows[0]) if rows else "none"
                raise DataError(f"{p}: no column '{text_column}'; columns found: {found} (choose with --text-column)")
            has_id = id_column in rows[0]
            ids += [r.get(id_column) if has_id else len(out) + i for i, r in enumerate(rows)]
            out += [str(r[text_column]) for r in rows]
            if label_column in rows[0] and not texts:
                labels, _ = map_labels([r[label_column] for r in rows], positive_label, True, str(p))
    if not out:
        raise MaskLabError("predict needs --text TEXT (repeatable) or --data FILE")
    return out, labels, ids


def read_threshold_texts(path: str, text_column: str = "text", label_column: str = "label",
                         positive_label: Optional[str] = None) -> list[str]:
    """The benign rows of a --threshold-data file: every row, or the rows whose label is not the
    positive one when it has a label column (a file of benign rows only is fine: one class)."""
    texts, _, _ = read_texts(path, [], text_column, "\0 no label column", None)
    p = Path(path)
    if p.suffix.lower() != ".txt":
        from masklab.downstream.data.labelled import POSITIVE_NAMES, read_local

        rows = read_local(p)
        if rows and label_column in rows[0]:
            def positive(v) -> bool:
                v = str(v)
                return v == str(positive_label) if positive_label is not None else \
                    v in ("1", "True") or v.lower() in POSITIVE_NAMES

            keep = [not positive(r[label_column]) for r in rows]
            log.info("--threshold-data %s: using its %d benign rows (of %d)", path, sum(keep), len(rows))
            texts = [t for t, k in zip(texts, keep) if k]
    if not texts:
        raise DataError(f"--threshold-data {path} holds no benign rows")
    return texts


def set_threshold(model: Scorer, benign_texts: Sequence[str], target_fpr: float, source: str) -> dict:
    """Re-set `model`'s operating point on benign rows (in memory; the saved model is unchanged)."""
    model.operating_point = OP.choose(None, model.scores(benign_texts), target_fpr, source)
    return model.operating_point


def rows_for(model: Scorer, texts: Sequence[str], ids: Sequence, s: np.ndarray) -> list[dict]:
    """The output rows (ROW_FIELDS) for scores `s` [N] of `texts` under the model's operating point."""
    op, p = model.operating_point, model.probability(s)
    label = (s >= op["threshold"]).astype(np.int64)
    return [{"id": i, "score": float(s[k]), "probability": float(p[k]), "label": int(label[k]),
             "label_name": model.label_names.get(str(int(label[k])), str(int(label[k]))),
             "threshold": op["threshold"], "threshold_target_fpr": op.get("target_fpr"),
             "threshold_set": op.get("chosen_on"), "text": t} for k, (i, t) in enumerate(zip(ids, texts))]


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    if fmt != "csv":
        raise MaskLabError(f"--format must be jsonl or csv, not '{fmt}'")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def predict(model_path: str | Path, texts: Sequence[str], labels: Optional[np.ndarray] = None,
            out: Optional[str | Path] = None, ids: Optional[Sequence] = None, fmt: Optional[str] = None,
            threshold_texts: Optional[Sequence[str]] = None, target_fpr: float = 0.01,
            threshold_source: str = "--threshold-data") -> dict:
    """Score `texts`; write one row per text (ROW_FIELDS) to `out` (or stdout), jsonl or csv
    (`fmt`, default from out's suffix). `threshold_texts`: benign rows to re-set the threshold on
    for `target_fpr` first. -> {rows, metrics, operating_point}."""
    from masklab.downstream.evaluation import metrics as M

    model = load_model(model_path)
    if threshold_texts is not None:
        set_threshold(model, threshold_texts, target_fpr, threshold_source)
        print(f"predict: {OP.describe(model.operating_point)}", file=sys.stderr)
    if model.calibration is None:
        log.info("%s has no calibration: probability = sigmoid(score)", model_path)
    s = model.scores(texts)
    bad = ~np.isfinite(np.asarray(s, dtype=np.float64))
    if bad.any():  # a NaN score would label the text benign, and bare NaN is not JSON
        raise MaskLabError(f"{model_path}: {int(bad.sum())} of {len(bad)} scores are NaN/infinite (first: text "
                           f"{int(np.argmax(bad))}); the encoder or the bundle is damaged")
    rows = rows_for(model, texts, list(range(len(texts))) if ids is None else ids, s)
    fmt = fmt or ("csv" if out and str(out).lower().endswith(".csv") else "jsonl")
    text = format_rows(rows, fmt)
    if out:
        from masklab.downstream.run_files import atomic_file

        atomic_file(out, text)
    else:
        print(text, end="")
    metrics = None
    thr = model.operating_point["threshold"]
    if labels is not None:
        metrics = M.binary_metrics(labels, s, threshold=thr)
        metrics.update({f"{k}_at_threshold": v for k, v in M.rates_at_threshold(labels, s, thr).items()})
    return {"rows": rows, "metrics": metrics, "operating_point": model.operating_point}
