"""Operating points: the Clopper-Pearson bound against a brute-force binomial, the weak-point
warning, and thresholds set on separate benign rows (--threshold-data)."""
import logging
from math import comb

import numpy as np
import pytest

from masklab.downstream.evaluation import operating as OP


def _brute_upper(k: int, n: int, conf: float = 0.95) -> float:
    """The p where P(Binomial(n, p) <= k) = 1 - conf, by bisection on the exact binomial sum."""
    def cdf(p):
        return sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("k,n", [(0, 10), (0, 100), (1, 100), (3, 50), (10, 1000), (7, 7), (0, 1), (25, 300)])
def test_clopper_pearson_matches_brute_force_binomial(k, n):
    assert OP.fpr_upper_bound(k, n) == pytest.approx(_brute_upper(k, n), abs=1e-9)


def test_bound_known_values_and_rule_of_three():
    assert OP.fpr_upper_bound(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))  # closed form for k = 0
    assert OP.fpr_upper_bound(0, 1000) == pytest.approx(3 / 1000, rel=0.01)  # the rule of three
    assert OP.fpr_upper_bound(5, 5) == 1.0 and np.isnan(OP.fpr_upper_bound(0, 0))
    assert OP.rows_needed(0.01) == 1000 and OP.rows_needed(0.001) == 10000


def test_weak_point_warns_and_strong_point_does_not(caplog):
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="masklab.downstream"):
        op = OP.choose(np.r_[np.zeros(100), np.ones(20)].astype(int), rng.normal(size=120), 0.01, "validation")
    assert op["n_benign"] == 100 and op["n_beyond"] == 1 and op["warning"]
    assert "rests on 1 benign row(s) of 100" in caplog.text and "about 1000 benign rows" in caplog.text
    assert op["fpr_upper95"] == pytest.approx(_brute_upper(1, 100), abs=1e-9) and op["fpr_upper95"] > 0.04
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="masklab.downstream"):
        op = OP.choose(None, rng.normal(size=2000), 0.01, "--threshold-data traffic.jsonl")
    assert op["n_benign"] == 2000 and op["n_beyond"] == 20 and op["warning"] is None and not caplog.text
    assert op["fpr_observed"] == 0.01 and 0.01 < op["fpr_upper95"] < 0.015


def test_threshold_flags_at_most_the_target_on_its_own_rows():
    s = np.arange(500, dtype=float)
    op = OP.choose(None, s, 0.02, "x")
    assert (s >= op["threshold"]).sum() == 10 == op["n_beyond"]
    with pytest.raises(Exception, match="target-fpr"):
        OP.choose(None, s, 0.0, "x")
