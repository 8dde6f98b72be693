"""Binary detection metrics. Inputs: y int [N] in {0, 1} (1 = malicious), score float [N]:
higher = more likely malicious. Downstream scores are log-odds (decision functions, or
logit(p) for probabilistic models), so the default decision threshold is 0.0 (p = 0.5);
log-odds keep the ranking where probabilities would saturate to ties at 0/1 (Gaussian NB)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from masklab.downstream.data.labelled import check_binary

THRESHOLD_METRICS = ("accuracy", "precision", "recall", "f1")
RANK_METRICS = ("roc_auc", "pr_auc", "tpr_at_1pct_fpr")
ALL = THRESHOLD_METRICS + RANK_METRICS


def tpr_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest TPR whose FPR <= max_fpr on the ROC curve (0.0 if no threshold gets there)."""
    fpr, tpr, _ = skm.roc_curve(y, score)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_for_tpr(y_val: np.ndarray, score_val: np.ndarray, target_tpr: float = 0.95) -> float:
    """The highest threshold that flags >= target_tpr of the positives in a *validation* set.
    Use it on test data to read off the FPR an operator would see on benign inputs."""
    pos = np.sort(np.asarray(score_val)[np.asarray(y_val) == 1])[::-1]
    if len(pos) == 0:
        return 0.0
    k = int(np.ceil(target_tpr * len(pos))) - 1  # need k+1 positives at or above the threshold
    return float(pos[min(max(k, 0), len(pos) - 1)])


def threshold_for_fpr(y_val: np.ndarray, score_val: np.ndarray, target_fpr: float = 0.01) -> float:
    """The lowest threshold that flags at most `target_fpr` of the benign rows of a
    *validation* set (flag = score >= threshold): just above the (k+1)-th highest benign
    score, k = floor(target_fpr * n_benign)."""
    neg = np.sort(np.asarray(score_val, dtype=np.float64)[np.asarray(y_val) == 0])[::-1]
    k = int(np.floor(target_fpr * len(neg) + 1e-9))
    if len(neg) == 0 or k >= len(neg):
        return float(neg[-1]) if len(neg) else 0.0
    return float(np.nextafter(neg[k], np.inf))


def rates_at_val_thresholds(y: np.ndarray, score: np.ndarray, y_val: np.ndarray, score_val: np.ndarray,
                            target_tpr: float = 0.95, target_fpr: float = 0.0) -> dict:
    """Test FPR/TPR at thresholds chosen on validation scores: for `target_tpr` (keys
    fpr/tpr_at_target_tpr_threshold) and, when > 0, for `target_fpr` (keys ..._at_target_fpr_threshold)."""
    out = {}
    if target_tpr:
        r = rates_at_threshold(y, score, threshold_for_tpr(y_val, score_val, target_tpr))
        out["fpr_at_target_tpr_threshold"], out["tpr_at_target_tpr_threshold"] = r["fpr"], r["tpr"]
    if target_fpr:
        r = rates_at_threshold(y, score, threshold_for_fpr(y_val, score_val, target_fpr))
        out["fpr_at_target_fpr_threshold"], out["tpr_at_target_fpr_threshold"] = r["fpr"], r["tpr"]
    return out


def rates_at_threshold(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """FPR on benign inputs and TPR on malicious ones when flagging score >= threshold."""
    y, flagged = np.asarray(y), np.asarray(score) >= threshold
    neg, pos = y == 0, y == 1
    return {"fpr": float(flagged[neg].mean()) if neg.any() else float("nan"),
            "tpr": float(flagged[pos].mean()) if pos.any() else float("nan")}


def confusion(y: np.ndarray, pred: np.ndarray) -> list[list[int]]:
    """[[TN, FP], [FN, TP]] (rows: true benign, malicious; columns: predicted)."""
    return skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.0) -> dict:
    """Threshold metrics at `threshold` plus ranking metrics; raises DataError unless y is binary."""
    y = check_binary(y)
    score = np.asarray(score, dtype=np.float64)
    pred = (score >= threshold).astype(np.int64)
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, score)),
        "pr_auc": float(skm.average_precision_score(y, score)),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, score, 0.01),
    }


def _curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tps, fps) at each distinct threshold, highest first (as sklearn's curves)."""
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(t)[ends]
    return tps, (ends + 1) - tps


def fast_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.0) -> dict:
    """Same values as `binary_metrics` in plain numpy (no input validation): the bootstrap
    calls it thousands of times, where sklearn's per-call checks dominate."""
    pred = score >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    P, N = int(y.sum()), int(len(y) - y.sum())
    prec, rec = (tp / (tp + fp) if tp + fp else 0.0), tp / P
    tps, fps = _curve(y, score)
    tpr, fpr = np.r_[0, tps] / P, np.r_[0, fps] / N
    precision = tps / (tps + fps)
    return {"accuracy": (tp + N - fp) / len(y), "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "roc_auc": float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr)),
            "pr_auc": float(np.sum(np.diff(np.r_[0, tps / P]) * precision)),
            "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01 + 1e-12].max())}


def bootstrap_ci(y: np.ndarray, score: np.ndarray, threshold: float = 0.0, n: int = 1000, seed: int = 0,
                 alpha: float = 0.05, names=ALL) -> dict:
    """Percentile bootstrap (resample rows with replacement, seeded) -> {metric: [low, high]}.
    Resamples holding a single class are skipped (AUC is undefined there)."""
    y, score = np.asarray(check_binary(y)), np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in names}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        m = fast_metrics(y[i], score[i], threshold)
        for k in names:
            draws[k].append(m[k])
    return {k: [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))] if v else [np.nan, np.nan]
            for k, v in draws.items()}


def summarize(values) -> dict:
    """Per-fold values -> {mean, sd (sample, ddof=1), n, values}."""
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "n": int(len(v)), "values": [float(x) for x in v]}
