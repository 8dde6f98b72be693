"""What every benchmark writes: the machine line (CPU, cores, GPU, torch, commit) and its results
as a markdown table."""
from __future__ import annotations

import os
import platform
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


def rerun_command(module: str, quick: bool = False, sizes: str = "") -> str:
    """The command a results note quotes, e.g. '`python -m benchmarks.scale --quick`'."""
    return f"`python -m {module}" + (" --quick" if quick else "") + (f" --sizes {sizes}" if sizes else "") + "`"


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
