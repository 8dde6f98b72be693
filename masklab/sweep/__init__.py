"""Sweeps: variants x seeds at equal compute, trained and evaluated in one command, compared with
intervals over seeds (spec.py, cells.py, compute.py, run_cell.py, executors.py, evaluations.py,
collect.py, stats.py, plots.py, report.py; `masklab sweep | compare` in cli.py)."""
