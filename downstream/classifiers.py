"""Classifiers on embeddings, stratified k-fold CV over seeds, and saved prediction bundles.

Features X: float [N, D] embeddings (or an object array of N strings for text pipelines such
as TF-IDF). Labels y: int [N] in {0, 1}. Every score is a log-odds of "malicious" (see
downstream.metrics), so one decision threshold (0.0) serves all classifiers.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from masklab.downstream import metrics as M
from masklab.downstream._io import atomic_dir, read_json, write_json
from masklab.downstream.data import check_binary
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


def make_classifier(name: str, seed: int = 0) -> Pipeline:
    """A fresh, unfitted pipeline. The final step is always named `clf` (grid keys use it).
    Scaling goes in front of the margin/distance-based models; trees don't need it."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import SVC, LinearSVC

    if name == "lr":
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=5000))])
    if name == "svm_linear":
        return Pipeline([("scale", StandardScaler()), ("clf", LinearSVC(C=0.1, max_iter=20000, random_state=seed))])
    if name == "svm_rbf":
        return Pipeline([("scale", StandardScaler()), ("clf", SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed))])
    if name == "rf":
        return Pipeline([("clf", RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1))])
    if name == "gnb":
        return Pipeline([("scale", StandardScaler()), ("clf", GaussianNB())])
    if name == "xgb":
        from xgboost import XGBClassifier

        return Pipeline([("clf", XGBClassifier(n_estimators=200, max_depth=3, learning_rate=0.1, subsample=0.8,
                                               colsample_bytree=0.8, tree_method="hist", random_state=seed,
                                               n_jobs=1, eval_metric="logloss"))])
    if name == "tfidf":
        from masklab.downstream.tfidf import make_tfidf_lr

        return make_tfidf_lr(seed)
    raise MaskLabError(f"classifier '{name}' is not one of {', '.join(NAMES + ('tfidf',))}")


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
    if folds < 2 or smallest < folds:
        raise DataError(f"{folds}-fold stratified CV needs >= {folds} examples of each class "
                        f"(smallest class has {smallest}); use fewer folds")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y)), y))


def fit(name: str, X, y: np.ndarray, seed: int = 0, grid: bool = False) -> Pipeline:
    """Fit one classifier (with an inner-CV grid search when `grid`)."""
    clf = make_classifier(name, seed)
    if grid and name in GRIDS:
        inner = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
        search = GridSearchCV(clf, GRIDS[name], cv=inner, scoring="roc_auc", n_jobs=1, refit=True)
        return search.fit(X, y).best_estimator_
    return clf.fit(X, y)


def inner_oof_scores(clf: Pipeline, X, y: np.ndarray, seed: int, folds: int = 3) -> np.ndarray:
    """Out-of-fold scores on a training set: the validation data thresholds are chosen on."""
    out = np.zeros(len(y))
    for tr, va in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + 1).split(np.zeros(len(y)), y):
        out[va] = scores(clone(clf).fit(_take(X, tr), y[tr]), _take(X, va))
    return out


def _take(X, idx):
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def cross_validate(X, y, names: Sequence[str], folds: int = 5, seeds: Sequence[int] = (0,), grid: bool = False,
                   target_tpr: float = 0.95, n_boot: int = 1000, fit_fn: Optional[Callable] = None) -> dict:
    """Stratified k-fold CV per classifier and seed.

    Per fold: threshold metrics at 0 log-odds, ROC-AUC, PR-AUC, TPR at 1% FPR, and the
    benign FPR / malicious TPR at a threshold picked for `target_tpr` on inner out-of-fold
    scores of the training part only (never on the test fold). Returns
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
                clf = (fit_fn or (lambda n, a, b, s: fit(n, a, b, s, grid)))(name, _take(X, tr), y[tr], seed)
                s = scores(clf, _take(X, te))
                oof[te] = s
                m = M.binary_metrics(y[te], s)
                if target_tpr and fit_fn is None:
                    thr = M.threshold_for_tpr(y[tr], inner_oof_scores(clf, _take(X, tr), y[tr], seed), target_tpr)
                    r = M.rates_at_threshold(y[te], s, thr)
                    m["fpr_at_val_threshold"], m["tpr_at_val_threshold"] = r["fpr"], r["tpr"]
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
            "folds": folds, "seeds": [int(s) for s in seeds], "target_tpr": target_tpr, "grid": grid,
        }
        s = results[name]["summary"]
        log.info("%s: acc %.3f ± %.3f  f1 %.3f ± %.3f  roc_auc %.3f ± %.3f", name, s["accuracy"]["mean"],
                 s["accuracy"]["sd"], s["f1"]["mean"], s["f1"]["sd"], s["roc_auc"]["mean"], s["roc_auc"]["sd"])
    return results


# -- saved bundles: a fitted classifier + how to embed raw text for it ---------------------
_TRUSTED_PREFIXES = ("sklearn.", "xgboost.", "numpy.", "scipy.", "builtins.", "collections.")


def save_bundle(out: str | Path, clf, name: str, encoder_spec: dict, threshold: float = 0.0,
                label_names: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Directory with classifier.skops (no pickle) + bundle.json. encoder_spec {"kind": "text"}
    means the classifier takes raw strings (TF-IDF)."""
    import skops.io as sio

    with atomic_dir(out) as tmp:
        sio.dump(clf, tmp / "classifier.skops")
        write_json(tmp / "bundle.json", {"classifier": name, "encoder": encoder_spec, "threshold": threshold,
                                         "label_names": {str(k): v for k, v in (label_names or {}).items()},
                                         **(extra or {})})
    return Path(out)


class Bundle:
    """A loaded bundle: `predict(texts)` -> {score: log-odds [N], label: int [N]}."""

    def __init__(self, clf, info: dict, path: Path):
        self.clf, self.info, self.path = clf, info, path
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None and self.info["encoder"]["kind"] != "text":
            from masklab.downstream.encoders import encoder_from_spec

            self._encoder = encoder_from_spec(self.info["encoder"])
        return self._encoder

    def features(self, texts: Sequence[str]):
        return np.asarray(list(texts), dtype=object) if self.encoder is None else self.encoder.encode(texts)

    def predict(self, texts: Sequence[str]) -> dict:
        s = scores(self.clf, self.features(texts))
        return {"score": s, "label": (s >= self.info.get("threshold", 0.0)).astype(np.int64)}


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle; only sklearn/xgboost/numpy/scipy types are accepted from the file."""
    import skops.io as sio

    p = Path(path)
    if not (p / "bundle.json").is_file() or not (p / "classifier.skops").is_file():
        raise MaskLabError(f"{p} is not a classifier bundle (needs bundle.json + classifier.skops)")
    untrusted = sio.get_untrusted_types(file=p / "classifier.skops")
    bad = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if bad:
        raise MaskLabError(f"{p}/classifier.skops holds types outside sklearn/xgboost: {bad[:5]}")
    return Bundle(sio.load(p / "classifier.skops", trusted=untrusted), read_json(p / "bundle.json"), p)
