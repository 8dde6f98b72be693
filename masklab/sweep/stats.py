"""Intervals over seeds: Student t for a mean, and for the paired difference to the baseline.

Pairing: cell (variant, seed s) is compared with (baseline, seed s): the same seed gives the same
data order and initialisation, so the per-seed difference removes that shared noise. The interval
of the difference is the t-interval of the per-seed differences (n - 1 degrees of freedom). With
3 seeds t(0.975, 2) = 4.30: intervals are wide, and "within noise" is the honest verdict for
small effects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats as st


@dataclass
class Interval:
    mean: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1 or not math.isfinite(self.lo):
            return f"{self.mean:.{digits}g} (n=1)"
        return f"{self.mean:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"


def t_interval(xs: Sequence[float], level: float = 0.95) -> Interval:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    n = len(xs)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = sum(xs) / n
    if n == 1:
        return Interval(m, float("-inf"), float("inf"), 1)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = st.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n)


def paired_difference(variant: dict, baseline: dict, level: float = 0.95) -> Interval:
    """variant, baseline: {seed: value}; the t-interval of value(seed) - baseline(seed) over shared seeds."""
    seeds = sorted(set(variant) & set(baseline))
    return t_interval([variant[s] - baseline[s] for s in seeds], level)


def verdict(diff: Interval, lower_is_better: bool) -> str:
    """better / worse when the interval of the difference excludes 0; else within noise."""
    if diff.n < 2:
        return "n/a (needs 2 seeds)"
    if diff.lo == diff.hi:  # every seed gave the same difference (a discrete metric): no noise estimate
        return "no spread over seeds"
    if diff.lo > 0:
        return "worse" if lower_is_better else "better"
    if diff.hi < 0:
        return "better" if lower_is_better else "worse"
    return "within noise"


def spread(values: Sequence[Optional[float]]) -> tuple[float, float, float]:
    """(mean, min, max) of the finite values (the seed band of a curve)."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return float("nan"), float("nan"), float("nan")
    return sum(xs) / len(xs), min(xs), max(xs)
