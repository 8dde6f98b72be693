"""GLUE metrics in numpy (checked against scikit-learn and scipy in the tests): Matthews
correlation (CoLA), binary F1 with 1 as the positive class and accuracy (MRPC, QQP), Pearson and
Spearman (STS-B, ties get average ranks), accuracy (the rest). All are reported x 100, as GLUE
tables do. A task's score is the mean of its metrics."""
from __future__ import annotations

import numpy as np


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(p)))


def f1(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y) == 1, np.asarray(p) == 1
    tp = float(np.sum(y & p))
    denom = float(np.sum(y) + np.sum(p))
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews(y: np.ndarray, p: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K, what sklearn computes); 0 when undefined."""
    y, p = np.asarray(y), np.asarray(p)
    classes = np.union1d(y, p)
    C = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(C, (np.searchsorted(classes, y), np.searchsorted(classes, p)), 1)
    t, q, c, s = C.sum(1), C.sum(0), np.trace(C), C.sum()
    den = np.sqrt((s * s - q @ q) * (s * s - t @ t))
    return 0.0 if den == 0 else float((c * s - t @ q) / den)


def pearson(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    y, p = y - y.mean(), p - p.mean()
    den = np.sqrt((y @ y) * (p @ p))
    return 0.0 if den == 0 else float(y @ p / den)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    grp = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0 + 1
    r = np.empty(len(x))
    r[order] = avg[grp]
    return r


def spearman(y: np.ndarray, p: np.ndarray) -> float:
    return pearson(_ranks(y), _ranks(p))


FUNCS = {"acc": accuracy, "f1": f1, "mcc": matthews, "pearson": pearson, "spearman": spearman}


def score(metrics: tuple, labels: np.ndarray, logits: np.ndarray) -> dict:
    """{metric: value x 100, ..., "score": mean} from labels [N] and logits [N, C] (C = 1: regression)."""
    logits = np.asarray(logits)
    pred = logits[:, 0] if logits.shape[1] == 1 else logits.argmax(1)
    out = {m: 100.0 * FUNCS[m](labels, pred) for m in metrics}
    out["score"] = float(np.mean([out[m] for m in metrics]))
    return out
