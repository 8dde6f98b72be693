"""Operating points: a decision threshold chosen for a target false-positive rate, with the
evidence behind it.

A threshold set for `target_fpr` on n benign rows leaves k = floor(target_fpr * n) of them at
or above it (the false positives it was set on). With k small the test FPR can be far above the
target: on 100 benign rows a 1% point rests on one row. Every chosen point therefore carries
n_benign, n_beyond (= k) and an exact one-sided Clopper-Pearson upper bound on the FPR:
the largest p with P(Binomial(n, p) <= k) >= alpha, i.e. Beta(1 - alpha; k + 1, n - k).
Fewer than MIN_BEYOND benign rows beyond the threshold gives a warning: for a target f that
needs about MIN_BEYOND / f benign rows (1% -> 1,000; 0.1% -> 10,000).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.downstream")
MIN_BEYOND = 10  # benign rows at or above a chosen threshold below which the point is flagged as weak
CONFIDENCE = 0.95


def fpr_upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Exact one-sided Clopper-Pearson upper bound on a rate after k events in n trials
    (1.0 when k == n; nan when n == 0)."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n (got k={k}, n={n})")
    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def rows_needed(target_fpr: float, min_beyond: int = MIN_BEYOND) -> int:
    """Benign rows for `min_beyond` of them to lie beyond a `target_fpr` threshold."""
    return int(np.ceil(min_beyond / target_fpr - 1e-9)) if target_fpr > 0 else 0


def point(scores_benign: np.ndarray, threshold: float, target_fpr: Optional[float], chosen_on: str) -> dict:
    """The evidence for `threshold` on the benign scores it was set on (float [n])."""
    s = np.asarray(scores_benign, dtype=np.float64)
    n, k = int(len(s)), int((s >= threshold).sum())
    op = {"threshold": float(threshold), "target_fpr": target_fpr, "chosen_on": chosen_on, "n_benign": n,
          "n_beyond": k, "fpr_observed": k / n if n else float("nan"),
          "fpr_upper95": fpr_upper_bound(k, n), "warning": None}
    if target_fpr and k < MIN_BEYOND:
        op["warning"] = (f"the {target_fpr:g} FPR threshold rests on {k} benign row(s) of {n} in {chosen_on} "
                         f"(fewer than {MIN_BEYOND}); the FPR may be up to {op['fpr_upper95']:.3g} (95% upper "
                         f"bound): about {rows_needed(target_fpr)} benign rows are needed (--threshold-data)")
    return op


def on_validation(name: Optional[str]) -> str:
    """The `chosen_on` label of a validation split: "validation", or "validation (NAME)" when it has its own name."""
    return "validation" if not name or name == "validation" else f"validation ({name})"


def choose(y: Optional[np.ndarray], score: np.ndarray, target_fpr: float, chosen_on: str, warn: bool = True) -> dict:
    """Threshold for `target_fpr` on the benign rows (y == 0; all rows when y is None) of a
    threshold-setting set, with its evidence; logs the warning when the point is weak."""
    from masklab.downstream.evaluation.metrics import threshold_for_fpr

    if not 0 < target_fpr < 1:
        raise MaskLabError(f"--target-fpr must be in (0, 1) to choose a threshold (got {target_fpr})")
    s = np.asarray(score, dtype=np.float64)
    benign = s if y is None else s[np.asarray(y) == 0]
    if len(benign) == 0:
        raise MaskLabError(f"{chosen_on} holds no benign rows to set a threshold on")
    op = point(benign, threshold_for_fpr(np.zeros(len(benign), dtype=np.int64), benign, target_fpr),
               target_fpr, chosen_on)
    if warn and op["warning"]:
        log.warning(op["warning"])
    return op


def default_point(threshold: float = 0.0, chosen_on: str = "default (log-odds 0, p = 0.5)") -> dict:
    """A threshold that was not chosen on data: no evidence to report."""
    return {"threshold": float(threshold), "target_fpr": None, "chosen_on": chosen_on, "n_benign": 0,
            "n_beyond": 0, "fpr_observed": None, "fpr_upper95": None, "warning": None}


def describe(op: dict) -> str:
    """One line for logs and CLI output."""
    if not op.get("target_fpr"):
        return f"threshold {op['threshold']:.4f} ({op['chosen_on']})"
    return (f"threshold {op['threshold']:.4f} for {op['target_fpr']:g} FPR, set on {op['chosen_on']}: "
            f"{op['n_beyond']} of {op['n_benign']} benign rows beyond it, FPR <= {op['fpr_upper95']:.4f} "
            f"(95% one-sided Clopper-Pearson)")
