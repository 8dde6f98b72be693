"""Calibrated probabilities from validation scores, stored as plain JSON in bundles.

Input: log-odds scores s float [N] on validation data with labels y int [N]. Platt scaling
fits p = sigmoid(a * s + b) (one-feature logistic regression); isotonic fits a monotone
step function (sklearn's IsotonicRegression), stored as its breakpoints and applied with
linear interpolation, clipped at the ends (what IsotonicRegression.predict does).
"""
from __future__ import annotations

import numpy as np

from masklab.errors import MaskLabError

METHODS = ("platt", "isotonic", "none")


def fit_calibration(method: str, y: np.ndarray, s: np.ndarray) -> dict | None:
    """-> JSON-able calibration (None for method 'none')."""
    if method not in METHODS:
        raise MaskLabError(f"calibration '{method}' is not one of {', '.join(METHODS)}")
    if method == "none":
        return None
    y, s = np.asarray(y), np.asarray(s, dtype=np.float64)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # large C: a 2-parameter fit on held-out data needs no shrinkage toward p = 0.5
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(s[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]), "n": int(len(y))}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
    return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist(), "n": int(len(y))}


def apply_calibration(cal: dict, s: np.ndarray) -> np.ndarray:
    """Scores [N] -> calibrated probabilities of 'malicious' float64 [N]."""
    s = np.asarray(s, dtype=np.float64)
    if cal["method"] == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * s + cal["b"])))
    if cal["method"] == "isotonic":
        return np.interp(s, np.asarray(cal["x"], dtype=np.float64), np.asarray(cal["y"], dtype=np.float64))
    raise MaskLabError(f"unknown calibration method {cal.get('method')!r} in the bundle")
