"""Shared bits of the benchmark scripts: machine line, markdown tables, step statistics, matmul peak."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path


def machine_line(threads: int) -> str:
    import torch

    try:
        here = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here).stdout.strip() or "unknown"
        # code that differs from the commit would make the figure unreproducible from it: say so
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "..",
                           ":(exclude)RESULTS.md", ":(exclude)results_*.md"],
                          capture_output=True, text=True, cwd=here).stdout.strip():
            commit += " + uncommitted changes"
    except OSError:
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"Machine: {cpu}, {os.cpu_count()} cores ({threads} thread(s) used), {dev}; torch {torch.__version__}; "
            f"commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def write_table(path: str, title: str, header: list[str], rows: list[list], note: str = "") -> str:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    if note:
        lines += ["", note]
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


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
