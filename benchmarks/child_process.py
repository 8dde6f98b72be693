"""Running a benchmark's measurement in a fresh interpreter (`python -m <module> --child ...`), so its
imports, start-up and peak RSS are its own, and reading back the JSON object its last stdout line holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional


def run_child(module: str, *argv: str, env: Optional[dict] = None, cwd: Optional[Path] = None) -> dict:
    """`python -m module --child *argv` with os.environ updated by `env`; a failing child raises
    RuntimeError with the tail of its stderr."""
    r = subprocess.run([sys.executable, "-m", module, "--child", *argv], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, cwd=cwd)
    if r.returncode:
        raise RuntimeError(f"child {argv} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
