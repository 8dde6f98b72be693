"""Train once, choose on validation, score several test sets: `masklab classify --train --val --test`.

Every classifier is fitted on the training split only. The validation split (given, or carved
from train, grouped by a column when asked) decides everything an operator relies on: which
classifier the bundle keeps (validation ROC-AUC), the decision thresholds (for a target TPR
and a target FPR) and the probability calibration. Test sets are scored once, never looked at
for any choice. Outputs (atomically, in `out`):
  out/<test name>/   one run directory per test set (results.json, labels.npy, texts.jsonl)
  out/validation/    the validation split's run directory (what the choices were made on)
  out/bundle/        the chosen classifier, its thresholds and calibration (classifiers.bundle)
  out/summary.json   per classifier: validation metrics and thresholds; the choice
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.classifiers.calibration import apply_calibration, fit_calibration
from masklab.downstream.classifiers.models import Settings, fit, scores
from masklab.downstream.run_files import atomic_dir, write_json, write_run
from masklab.errors import DataError, MaskLabError

log = logging.getLogger("masklab.downstream")


@dataclass
class Split:
    """One labelled split: X float32 [N, D] embeddings (None for raw text), texts (N), y int64 [N]."""
    name: str
    X: Optional[np.ndarray]
    texts: list[str]
    y: np.ndarray
    records: list[dict]
    meta: dict

    def features(self, clf_name: str):
        if clf_name == "tfidf":
            return np.asarray(self.texts, dtype=object)
        if self.X is None:
            raise MaskLabError(f"{self.name} is raw text: classifier '{clf_name}' needs embeddings "
                               "(pass an embeddings dir from `masklab embed`, or use --classifiers tfidf)")
        return self.X

    def subset(self, idx: np.ndarray, name: str) -> "Split":
        return Split(name, None if self.X is None else self.X[idx], [self.texts[i] for i in idx], self.y[idx],
                     [self.records[i] for i in idx], self.meta)

    def groups(self, column: Optional[str]) -> Optional[np.ndarray]:
        if column is None:
            return None
        if not self.records or column not in self.records[0]:
            found = ", ".join(self.records[0]) if self.records else "none"
            raise DataError(f"{self.name}: no column '{column}' for --group-column; columns found: {found}")
        return np.asarray([str(r.get(column)) for r in self.records])


def load_split(path: str | Path, data_kw: Optional[dict] = None) -> Split:
    """An embeddings directory (`masklab embed`) or a labelled data file (raw text, TF-IDF only)."""
    from masklab.downstream.data.labelled import check_binary

    p = Path(path)
    if p.is_dir():
        from masklab.downstream.pipeline import load_embeddings

        X, y, records, meta = load_embeddings(p)
        texts = [str(r.get("text", "")) for r in records]
    else:
        from masklab.downstream.data.labelled import load_labelled

        data = load_labelled(str(p), **(data_kw or {}))
        X, y, records, texts = None, data.labels, data.to_records(), data.texts
        meta = {"source": data.source, "encoder": {"kind": "text"}, "label_names": data.label_names}
    return Split(p.name, X, texts, check_binary(y, f"labels in {p}"), records, meta)


def carve_validation(train: Split, fraction: float, seed: int, groups: Optional[np.ndarray]) -> tuple[Split, Split]:
    """Stratified (grouped, when `groups`) hold-out of about `fraction` of train."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if not 0 < fraction < 1:
        raise MaskLabError(f"--val-fraction must be in (0, 1) when no --val is given, got {fraction}")
    k = max(2, int(round(1 / fraction)))
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if groups is not None else \
        StratifiedKFold(k, shuffle=True, random_state=seed)
    try:
        tr, va = next(splitter.split(np.zeros(len(train.y)), train.y, groups))
    except ValueError as e:
        raise DataError(f"cannot carve a validation split from {train.name}: {e}") from None
    log.info("no --val: holding out %d of %d training rows for validation", len(va), len(train.y))
    return train.subset(tr, train.name), train.subset(va, "validation")


def _result(y: np.ndarray, s: np.ndarray, thr: dict, seed: int, n_boot: int, cal: Optional[dict]) -> dict:
    m = M.binary_metrics(y, s)
    for key, t in (("target_tpr_threshold", thr.get("target_tpr")), ("target_fpr_threshold", thr.get("target_fpr"))):
        if t is not None:
            r = M.rates_at_threshold(y, s, t)
            m[f"fpr_at_{key}"], m[f"tpr_at_{key}"] = r["fpr"], r["tpr"]
    if cal:
        p = np.clip(apply_calibration(cal, s), 1e-7, 1 - 1e-7)
        m["brier"] = float(np.mean((p - y) ** 2))
    return {"summary": {k: M.summarize([v]) for k, v in m.items()},
            "ci": M.bootstrap_ci(y, s, n=n_boot, seed=seed) if n_boot else {},
            "oof": {"seed": seed, "score": s.tolist()}, "confusion": M.confusion(y, (s >= 0).astype(int)),
            "thresholds": thr}


def evaluate(train: Split, tests: Sequence[Split], out: str | Path, names: Sequence[str],
             val: Optional[Split] = None, settings: Settings = Settings(), grid: bool = False,
             target_tpr: float = 0.95, target_fpr: float = 0.01, calibration: str = "platt", n_boot: int = 1000,
             seed: int = 0, save: Optional[str] = "best", group_column: Optional[str] = None,
             val_fraction: float = 0.2, threshold_data=None, select_by: str = "auc") -> dict:
    """Fit every classifier on `train`, choose on `val` (by `select_by`: auc | tpr_at_fpr), score
    every test set; write `out`. The target-FPR threshold is set on `threshold_data`
    (selection.ThresholdData: benign rows used for nothing else) when given, else on validation,
    and carries its evidence (operating.point: n_benign, n_beyond, fpr_upper95, warning).
    -> {"chosen": name, "validation": {name: metrics}, "tests": {test name: {name: result}},
    "operating_points": {name: point}}."""
    from masklab.downstream.evaluation import operating as OP
    from masklab.downstream.evaluation.selection import select
    if not tests:
        raise MaskLabError("classify --train needs at least one --test set")
    if not (0 <= target_fpr < 1) or not (0 <= target_tpr <= 1):
        raise MaskLabError(f"--target-fpr must be in [0, 1) and --target-tpr in [0, 1] (got {target_fpr}, {target_tpr})")
    groups = train.groups(group_column)
    if val is None:
        train, val = carve_validation(train, val_fraction, seed, groups)
        groups = train.groups(group_column)
    dims = {s.X.shape[1] for s in (train, val, *tests) if s.X is not None}
    if len(dims) > 1:
        raise DataError(f"train/val/test embeddings differ in width {sorted(dims)}: embed them with one encoder")
    encoders = {str(s.meta.get("encoder", {}).get("path")) for s in (train, val, *tests) if s.X is not None}
    if len(encoders) > 1:
        log.warning("train/val/test embeddings come from different encoders: %s", sorted(encoders))
    fitted, val_scores, validation, thresholds, cals = {}, {}, {}, {}, {}
    for name in names:
        fitted[name] = fit(name, train.features(name), train.y, seed, grid, settings, groups)
        s = scores(fitted[name], val.features(name))
        val_scores[name] = s
        if not target_fpr:
            op = OP.default_point()
        elif threshold_data is not None:
            op = OP.choose(None, scores(fitted[name], threshold_data.features(name, train.meta.get("encoder", {}))),
                           target_fpr, threshold_data.name, warn=False)
        else:
            op = OP.choose(val.y, s, target_fpr, OP.on_validation(val.name), warn=False)
        thresholds[name] = {"default": 0.0,
                            "target_tpr": M.threshold_for_tpr(val.y, s, target_tpr) if target_tpr else None,
                            "target_fpr": op["threshold"] if target_fpr else None,
                            "target_tpr_value": target_tpr, "target_fpr_value": target_fpr, "operating_point": op}
        cals[name] = fit_calibration(calibration, val.y, s)
        validation[name] = _result(val.y, s, thresholds[name], seed, 0, cals[name])
        log.info("%s: validation ROC-AUC %.3f", name, validation[name]["summary"]["roc_auc"]["mean"])
    chosen = None
    if save:
        chosen = select({n: validation[n]["summary"] for n in names}, select_by) if save == "best" else save
        if chosen not in names:
            raise MaskLabError(f"--save {chosen}: not among the classifiers run ({', '.join(names)})")
    test_dirs = _unique_names([t.name for t in tests])
    results = {"chosen": chosen, "validation": {n: validation[n]["summary"] for n in names}, "tests": {},
               "operating_points": {n: thresholds[n]["operating_point"] for n in names}, "select_by": select_by}
    for n in ([chosen] if chosen else names):  # the warning for what an operator will deploy
        if thresholds[n]["operating_point"]["warning"]:
            log.warning("%s: %s", n, thresholds[n]["operating_point"]["warning"])
    with atomic_dir(out) as tmp:
        write_run(tmp / "validation", "validation", val.meta.get("source"), val.meta.get("encoder", {}), validation,
                  val.y, val.records, label_names=val.meta.get("label_names"))
        for t, d in zip(tests, test_dirs):
            res = {n: _result(t.y, scores(fitted[n], t.features(n)), thresholds[n], seed, n_boot, cals[n])
                   for n in names}
            write_run(tmp / d, "cross", f"{train.meta.get('source')} -> {t.meta.get('source')}",
                      train.meta.get("encoder", {}), res, t.y, t.records, train=train.name, validation=val.name,
                      test=t.name, chosen=chosen,
                      label_names=train.meta.get("label_names"))
            results["tests"][d] = res
        if chosen:
            from masklab.downstream.classifiers.bundle import save_bundle

            thr = thresholds[chosen]
            op = thr["target_fpr"] if thr["target_fpr"] is not None else 0.0
            enc = {"kind": "text"} if chosen == "tfidf" else train.meta.get("encoder", {})
            save_bundle(tmp / "bundle", fitted[chosen], chosen, enc, op, train.meta.get("label_names"),
                        {"thresholds": thr, "operating_point": thr["operating_point"], "select_by": select_by,
                         "calibration": cals[chosen], "settings": vars(settings),
                         "trained_on": train.name, "validated_on": val.name, "n_train": int(len(train.y)),
                         "n_val": int(len(val.y)), "grid": grid, "group_column": group_column})
        write_json(tmp / "summary.json", {"chosen": chosen, "select_by": select_by, "validation": results["validation"],
                                          "thresholds": thresholds, "calibration": calibration,
                                          "tests": {d: {n: r["summary"] for n, r in res.items()}
                                                    for d, res in results["tests"].items()}})
    return results


def _unique_names(names: list[str]) -> list[str]:
    """Directory names for the test sets: their own names, numbered where they repeat."""
    out = []
    for n in names:
        base = n or "test"
        out.append(base if base not in out and base not in ("validation", "bundle") else f"{base}_{len(out)}")
    return out
