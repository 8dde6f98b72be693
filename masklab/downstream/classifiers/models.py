"""Classifiers on embeddings (settings, fitting, scores) and stratified k-fold CV over seeds.
Saved bundles: classifiers.bundle; train/val/test evaluation: evaluation.crosssource.

Features X: float [N, D] embeddings (or an object array of N strings for text pipelines such
as TF-IDF). Labels y: int [N] in {0, 1}. Every score is a log-odds of "malicious" (see
downstream.metrics), so one decision threshold (0.0) serves all classifiers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from masklab.downstream.evaluation import metrics as M
from masklab.downstream.data.labelled import check_binary
from masklab.errors import DataError, MaskLabError

log = logging.getLogger("masklab.downstream")
NAMES = ("lr", "svm_linear", "svm_rbf", "rf", "gnb", "xgb")
# small grids, searched by inner 3-fold CV on each training fold when --grid is on
GRIDS = {
    "lr": {"clf__C": [0.01, 0.1, 1.0, 10.0]},
    "svm_linear": {"clf__C": [0.01, 0.1, 1.0]},
    "svm_rbf": {"clf__C": [0.3, 1.0, 10.0], "clf__gamma": ["scale", 0.3, 3.0]},
    "rf": {"clf__max_depth": [None, 8], "clf__min_samples_leaf": [1, 3]},
    "gnb": {"clf__var_smoothing": [1e-9, 1e-6, 1e-3]},
    "xgb": {"clf__max_depth": [2, 4], "clf__n_estimators": [100, 300]},
}


@dataclass(frozen=True)
class Settings:
    """Classifier knobs shared by every name. Defaults suit sentence embeddings: rows
    L2-normalised (cosine geometry, what the encoders are trained for), no per-feature
    standardisation (it re-weights dimensions the encoder made comparable)."""
    C: Optional[float] = None  # inverse regularisation of lr / svm_* / tfidf; None: the defaults below
    class_weight: Optional[str] = None  # None | "balanced" (sample weights n / (2 n_class), every classifier)
    scale: str = "none"  # none | standard: StandardScaler before lr / svm_* / gnb (trees never need it)
    normalize: str = "l2"  # l2 | none: unit-length rows before any embedding classifier

    def __post_init__(self):
        if self.C is not None and not (self.C > 0 and np.isfinite(self.C)):
            raise MaskLabError(f"--C must be a positive number, got {self.C}")
        if self.class_weight not in (None, "balanced"):
            raise MaskLabError(f"--class-weight must be none or balanced, got {self.class_weight!r}")
        if self.scale not in ("none", "standard"):
            raise MaskLabError(f"--scale must be none or standard, got {self.scale!r}")
        if self.normalize not in ("l2", "none"):
            raise MaskLabError(f"--normalize must be l2 or none, got {self.normalize!r}")


DEFAULT_C = {"lr": 1.0, "svm_linear": 1.0, "svm_rbf": 1.0, "tfidf": 10.0}


def make_classifier(name: str, seed: int = 0, settings: Settings = Settings()) -> Pipeline:
    """A fresh, unfitted pipeline. The final step is always named `clf` (grid keys use it)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC, LinearSVC

    C = settings.C if settings.C is not None else DEFAULT_C.get(name)
    if name == "tfidf":
        from masklab.downstream.classifiers.tfidf import make_tfidf_lr

        return make_tfidf_lr(seed, C=C)
    pre = [("norm", Normalizer())] if settings.normalize == "l2" else []
    if settings.scale == "standard" and name in ("lr", "svm_linear", "svm_rbf", "gnb"):
        pre.append(("scale", StandardScaler()))
    if name == "lr":
        clf = LogisticRegression(C=C, max_iter=5000)
    elif name == "svm_linear":
        clf = LinearSVC(C=C, max_iter=20000, random_state=seed)
    elif name == "svm_rbf":
        clf = SVC(kernel="rbf", C=C, gamma="scale", random_state=seed)
    elif name == "rf":
        clf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    elif name == "gnb":
        clf = GaussianNB()
    elif name == "xgb":
        from xgboost import XGBClassifier

        clf = XGBClassifier(n_estimators=200, max_depth=3, learning_rate=0.1, subsample=0.8, colsample_bytree=0.8,
                            tree_method="hist", random_state=seed, n_jobs=1, eval_metric="logloss")
    else:
        raise MaskLabError(f"classifier '{name}' is not one of {', '.join(NAMES + ('tfidf',))}")
    return Pipeline([*pre, ("clf", clf)])


def parse_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    names = list(NAMES) if names == ["all"] else names
    for n in names:
        make_classifier(n)  # fails early with the list of valid names
    return names


def scores(clf, X) -> np.ndarray:
    """Log-odds of class 1, float64 [N]: decision_function where the model has one (LR, SVMs),
    log p1 - log p0 for probabilistic models (no saturation to exact 0/1 ties)."""
    if hasattr(clf, "decision_function"):
        try:
            return np.asarray(clf.decision_function(X), dtype=np.float64)
        except AttributeError:  # a pipeline whose final step has no decision_function
            pass
    if hasattr(clf, "predict_log_proba"):
        try:
            with np.errstate(divide="ignore"):  # a forest's p = 0: log 0 = -inf, clipped below
                lp = np.asarray(clf.predict_log_proba(X), dtype=np.float64)
            # keep the order, stay finite for metrics and plots
            return np.clip(lp[:, 1] - lp[:, 0], -1e3, 1e3)
        except AttributeError:
            pass
    p = np.clip(np.asarray(clf.predict_proba(X), dtype=np.float64)[:, 1], 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic stratified k-fold split for a seed: [(train_idx, test_idx)] * folds."""
    y = np.asarray(y)
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2:
        raise DataError(f"--folds {folds}: cross-validation needs at least 2 folds (to train once and score "
                        "separate data, use classify --train/--val/--test)")
    if smallest < folds:
        raise DataError(f"{folds}-fold stratified CV needs >= {folds} examples of each class "
                        f"(smallest class has {smallest}); use fewer folds")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y)), y))


def _fit_params(y: np.ndarray, settings: Settings) -> dict:
    if settings.class_weight != "balanced":
        return {}
    from sklearn.utils.class_weight import compute_sample_weight

    return {"clf__sample_weight": compute_sample_weight("balanced", y)}


def fit(name: str, X, y: np.ndarray, seed: int = 0, grid: bool = False, settings: Settings = Settings(),
        groups: Optional[np.ndarray] = None) -> Pipeline:
    """Fit one classifier; with `grid`, an inner 3-fold search on (X, y) only, grouped by
    `groups` when given (rows of one group never sit on both sides of an inner split)."""
    clf = make_classifier(name, seed, settings)
    if grid and name in GRIDS:
        inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=seed) if groups is not None else \
            StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
        search = GridSearchCV(clf, GRIDS[name], cv=inner, scoring="roc_auc", n_jobs=1, refit=True)
        return search.fit(X, y, groups=groups, **_fit_params(y, settings)).best_estimator_
    return clf.fit(X, y, **_fit_params(y, settings))


def inner_oof_scores(clf: Pipeline, X, y: np.ndarray, seed: int, folds: int = 3,
                     settings: Settings = Settings()) -> np.ndarray:
    """Out-of-fold scores on a training set: the validation data thresholds are chosen on."""
    out = np.zeros(len(y))
    for tr, va in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + 1).split(np.zeros(len(y)), y):
        out[va] = scores(clone(clf).fit(_take(X, tr), y[tr], **_fit_params(y[tr], settings)), _take(X, va))
    return out


def _take(X, idx):
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def cross_validate(X, y, names: Sequence[str], folds: int = 5, seeds: Sequence[int] = (0,), grid: bool = False,
                   target_tpr: float = 0.95, n_boot: int = 1000, fit_fn: Optional[Callable] = None,
                   settings: Settings = Settings(), target_fpr: float = 0.0) -> dict:
    """Stratified k-fold CV per classifier and seed.

    Per fold: threshold metrics at 0 log-odds, ROC-AUC, PR-AUC, TPR at 1% FPR, and the
    benign FPR / malicious TPR at thresholds picked for `target_tpr` (and `target_fpr` when
    > 0) on inner out-of-fold scores of the training part only (never on the test fold). Returns
    {name: {summary: {metric: {mean, sd, n, values}}, ci: {metric: [lo, hi]} (bootstrap on
    the pooled out-of-fold scores of the first seed), oof: {seed, score [N]}, confusion}}.
    `fit_fn(name, X, y, seed) -> fitted` replaces the default fit (used by fine-tuning).
    """
    y = check_binary(y)
    results = {}
    for name in names:
        per_fold: dict[str, list] = {}
        oof_first, t0 = None, time.time()
        for seed in seeds:
            oof = np.full(len(y), np.nan)
            for tr, te in stratified_folds(y, folds, seed):
                clf = (fit_fn or (lambda n, a, b, s: fit(n, a, b, s, grid, settings)))(name, _take(X, tr), y[tr], seed)
                s = scores(clf, _take(X, te))
                oof[te] = s
                m = M.binary_metrics(y[te], s)
                if (target_tpr or target_fpr) and fit_fn is None:
                    inner = inner_oof_scores(clf, _take(X, tr), y[tr], seed, settings=settings)
                    m.update(M.rates_at_val_thresholds(y[te], s, y[tr], inner, target_tpr, target_fpr))
                for k, v in m.items():
                    per_fold.setdefault(k, []).append(v)
            if oof_first is None:
                oof_first = oof
        pred = (oof_first >= 0).astype(int)
        results[name] = {
            "summary": {k: M.summarize(v) for k, v in per_fold.items()},
            "ci": M.bootstrap_ci(y, oof_first, n=n_boot, seed=seeds[0]) if n_boot else {},
            "oof": {"seed": int(seeds[0]), "score": oof_first.tolist()},
            "confusion": M.confusion(y, pred),
            "seconds": round(time.time() - t0, 2),
            "folds": folds, "seeds": [int(s) for s in seeds], "target_tpr": target_tpr, "target_fpr": target_fpr,
            "grid": grid,
        }
        s = results[name]["summary"]
        log.info("%s: acc %.3f ± %.3f  f1 %.3f ± %.3f  roc_auc %.3f ± %.3f", name, s["accuracy"]["mean"],
                 s["accuracy"]["sd"], s["f1"]["mean"], s["f1"]["sd"], s["roc_auc"]["mean"], s["roc_auc"]["sd"])
    return results
