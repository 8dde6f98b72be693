"""`masklab glue --executor slurm`: one array element per unfinished (task, seed) cell, then a
gather job (afterany) that writes the summary. The job description is `<out>/.slurm/job.json`
(the Job + its cell list); elements run `python -m masklab.downstream.glue.slurm cell JOB INDEX`
through `slurm/glue.sbatch` (the project's sbatch conventions: MASKLAB_VENV / MASKLAB_PYTHON,
#SBATCH header defaults, extra options from --sbatch-args). A rerun recomputes which cells are
finished (same fingerprint) and submits only the others. With --mnli-start the MNLI cells are
a first array and the others wait for it (afterok)."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from masklab.errors import MaskLabError

SCRIPT = Path(__file__).resolve().parents[3] / "slurm" / "glue.sbatch"


def pending_cells(job) -> list[tuple[str, int]]:
    from masklab.downstream.glue.recipe import load_recipe
    from masklab.downstream.glue.run import cell_dir, finished, fingerprint, settings_for

    recipe, _ = load_recipe(job.recipe, job.overrides)
    out = []
    for name in job.tasks:
        for seed in job.seeds or recipe.seeds:
            s = settings_for(job, recipe, name, seed)
            mnli_start = bool(recipe.mnli_start and name in ("rte", "mrpc", "stsb") and not job.custom)
            if finished(cell_dir(job.out, name, seed), fingerprint(job, name, s, mnli_start)) is None:
                out.append((name, int(seed)))
    return out


def _sbatch(args: list[str], dry: bool) -> str:
    if dry:
        print("sbatch " + " ".join(shlex.quote(a) for a in args))
        return "DRYRUN"
    if shutil.which("sbatch") is None:
        raise MaskLabError("--executor slurm: sbatch not found on PATH (run on a Slurm login node)")
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise MaskLabError(f"sbatch failed: {r.stderr.strip()[-500:]}")
    return r.stdout.strip().split(";")[0]


def submit(job, args) -> int:
    """Write the job file, submit the arrays and the gather job; -> 0. With --wait, wait and print."""
    from masklab.downstream.glue.recipe import load_recipe

    job.progress = False  # log lines in Slurm output files
    recipe, _ = load_recipe(job.recipe, job.overrides)
    job.seeds = job.seeds or list(recipe.seeds)
    Path(job.out).mkdir(parents=True, exist_ok=True)
    cells = pending_cells(job)
    d = Path(job.out) / ".slurm"
    d.mkdir(exist_ok=True)
    jf = d / "job.json"
    from masklab.downstream.run_files import atomic_file

    atomic_file(jf, json.dumps({"job": asdict(job), "cells": cells}, indent=1))
    extra = shlex.split(args.sbatch_args or "")
    logs = [f"--output={d}/%x-%A_%a.out"]
    if not cells:
        print(f"every cell is finished in {job.out}; writing the summary here")
        return gather(jf)
    mnli = [i for i, (t, _) in enumerate(cells) if t == "mnli"] if recipe.mnli_start else []
    rest = [i for i in range(len(cells)) if i not in mnli]
    deps = []
    first = None
    if mnli:
        first = _sbatch([*logs, f"--array={','.join(map(str, mnli))}", *extra, str(SCRIPT), str(jf)], args.dry_run)
        deps.append(first)
    if rest:
        dep = [f"--dependency=afterok:{first}"] if first else []
        deps.append(_sbatch([*logs, f"--array={','.join(map(str, rest))}", *dep, *extra, str(SCRIPT), str(jf)],
                            args.dry_run))
    g = _sbatch([f"--output={d}/%x-gather-%j.out", f"--dependency=afterany:{':'.join(deps)}", "--export=ALL,GATHER=1",
                 "--job-name=masklab-glue-gather", *extra, str(SCRIPT), str(jf)], args.dry_run)
    print(f"submitted {len(cells)} cell(s) as job(s) {', '.join(deps)}; gather job {g} writes "
          f"{job.out}/results.md (logs in {d})")
    return 0


def _load(jf: Path):
    from masklab.downstream.glue.run import Job

    spec = json.loads(Path(jf).read_text())
    return Job(**spec["job"]), [tuple(c) for c in spec["cells"]]


def run_one(jf: Path, index: int) -> int:
    from masklab.downstream.glue.recipe import load_recipe
    from masklab.downstream.glue.run import run_cell

    job, cells = _load(jf)
    if not 0 <= index < len(cells):
        raise MaskLabError(f"array index {index} is outside the {len(cells)} cells of {jf}")
    name, seed = cells[index]
    recipe, recipe_file = load_recipe(job.recipe, job.overrides)
    run_cell(job, recipe, recipe_file, name, seed, {})
    return 0


def gather(jf: Path) -> int:
    from masklab.downstream.glue.recipe import load_recipe
    from masklab.downstream.glue.report import write_summary
    from masklab.downstream.glue.run import cell_dir

    job, _ = _load(jf)
    recipe, _ = load_recipe(job.recipe, job.overrides)
    seeds = job.seeds or list(recipe.seeds)
    cells, missing = [], []
    for name in job.tasks:
        for seed in seeds:
            p = cell_dir(job.out, name, seed) / "results.json"
            (cells.append(json.loads(p.read_text())) if p.is_file() else missing.append(f"{name}/seed_{seed}"))
    s = write_summary(job.out, cells, job.tasks, seeds, job.baseline)
    print(s["markdown"], end="")
    if missing:
        print(f"missing cells (failed or not run; see {Path(jf).parent}/*.out): {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if len(argv) == 3 and argv[0] == "cell":
            return run_one(Path(argv[1]), int(argv[2]))
        if len(argv) == 2 and argv[0] == "gather":
            return gather(Path(argv[1]))
    except MaskLabError as e:
        print(f"masklab glue (slurm): error: {e}", file=sys.stderr)
        return 2
    print("usage: python -m masklab.downstream.glue.slurm cell JOB_JSON INDEX | gather JOB_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
