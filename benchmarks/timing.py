"""Per-step timing figures: median [min-max] spreads and the matmul peak probe (utilisation's denominator)."""
from __future__ import annotations

import statistics
import time


def median(xs) -> float:
    return statistics.median(xs)


def spread(xs, unit: str) -> str:
    """Median [min-max] of a list of per-step figures, e.g. '2.31x [2.20-2.45]'."""
    fmt = (lambda v: f"{v:.2f}") if unit == "x" else (lambda v: f"{v:,.0f}")
    return f"{fmt(median(xs))}{unit} [{fmt(min(xs))}-{fmt(max(xs))}]"


def matmul_probe(n: int = 1024):
    """-> a callable timing one fp32 [n, n] @ [n, n] in process CPU time (as the training steps
    are timed, same threads) and returning its FLOP/s: the denominator of utilisation."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b

    def probe() -> float:
        t = time.process_time()
        a @ b
        return 2 * n**3 / (time.process_time() - t)

    return probe
