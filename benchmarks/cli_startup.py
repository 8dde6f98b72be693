"""How fast the CLI answers: `masklab --help` and `masklab prep --help` against bare Python and against
`import torch` (what every call paid before the subcommands imported only what they need).

Each command runs in a fresh subprocess (wall seconds, median of --reps after one warm-up run); the
target is < 1 s for both help commands (issue 30).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from benchmarks.results_table import machine_line, rerun_command, write_table

TARGET_S = 1.0
COMMANDS = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("masklab --help", [sys.executable, "-m", "masklab.cli", "--help"]),
    ("masklab prep --help", [sys.executable, "-m", "masklab.cli", "prep", "--help"]),
    ("python -c 'import torch' (peer: the old start-up)", [sys.executable, "-c", "import torch"]),
]


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 repetitions")
    ap.add_argument("--out", default="benchmarks/results_cli_startup.md")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else args.reps
    times = {name: [] for name, _ in COMMANDS}
    for cmd in (c for _, c in COMMANDS):
        wall(cmd)  # warm the page cache
    for _ in range(reps):  # interleaved, so machine noise hits every command alike
        for name, cmd in COMMANDS:
            times[name].append(wall(cmd))
    torch_s = statistics.median(times[COMMANDS[-1][0]])
    rows = []
    for name, _ in COMMANDS:
        med = statistics.median(times[name])
        met = "" if not name.startswith("masklab") else ("met" if med < TARGET_S else "MISSED")
        rows.append([name, f"{med:.2f}", f"{min(times[name]):.2f}-{max(times[name]):.2f}",
                     f"{med / torch_s:.2f}x", met])
    write_table(args.out, "CLI start-up (wall seconds in a fresh process)",
                ["command", "median s", "range s", "vs import torch", f"target < {TARGET_S:.0f} s"], rows,
                note=f"{machine_line(1)} {reps} runs each, interleaved. Rerun: "
                     f"{rerun_command('benchmarks.cli_startup', args.quick)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
