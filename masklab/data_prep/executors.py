"""Running the plan's units: a local process pool (`--num-proc`), or datatrove's executors.

datatrove (`--executor local|slurm`) brings task sharding, Slurm array submission, per-task
completion markers and "rerun only the tasks without one"; our step (`EncodeUnits`) encodes
the units of its rank, and `MergeStep` (one task, after all others) writes the manifest.
Units are split among tasks in contiguous blocks, so a task reads neighbouring byte ranges.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from masklab.data_prep.claim import clear_slurm_claim
from masklab.data_prep.merge import IncompletePrep, merge
from masklab.data_prep.plan import load_plan, plan_bytes
from masklab.data_prep.progress import ProgressBar
from masklab.data_prep.worker import encode_unit, unit_record
from masklab.errors import ConfigError, MaskLabError

log = logging.getLogger("masklab.data_prep")


def ranks_units(n_units: int, rank: int, world: int) -> range:
    return range(rank * n_units // world, (rank + 1) * n_units // world)


# --- local pool ---------------------------------------------------------------------------
_counters = None


def _init(counters):
    global _counters
    _counters = counters


def _pool_unit(args):
    work, index = args
    plan = load_plan(Path(work))

    def progress(nbytes, ntokens):
        with _counters.get_lock():
            _counters[0] += nbytes
            _counters[1] += ntokens

    return encode_unit(Path(work), plan, index, progress)


def run_pool(work: Path, plan: dict, num_proc: int) -> None:
    """Encode every unit with `num_proc` processes (1: in this process), one progress bar."""
    units = plan["units"]
    bar = ProgressBar(total_bytes=plan_bytes(plan))
    limit = plan["options"]["max_documents"]
    try:
        if num_proc <= 1:
            done = 0
            for i in range(len(units)):
                left = None if limit is None else limit - done
                if left is not None and left <= 0:
                    break
                done += encode_unit(work, plan, i, bar.update, left)["documents"]
            return
        counters = mp.Array("q", 2)
        ctx = mp.get_context("fork")
        with ctx.Pool(num_proc, initializer=_init, initargs=(counters,)) as pool:
            res = pool.map_async(_pool_unit, [(str(work), i) for i in range(len(units))], chunksize=1)
            seen = [0, 0]
            while not res.ready():
                res.wait(0.5)
                now = list(counters[:])
                bar.update(now[0] - seen[0], now[1] - seen[1])
                seen = now
            res.get()
    finally:
        bar.close()


# --- datatrove ----------------------------------------------------------------------------
@dataclass
class EncodeUnits:
    """datatrove pipeline step: encode the units of task `rank` of `world_size`."""
    work: str

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        _task_logging()
        work = Path(self.work)
        plan = load_plan(work)
        for i in ranks_units(len(plan["units"]), rank, world_size):
            encode_unit(work, plan, i)
        return data


@dataclass
class MergeStep:
    """datatrove pipeline step (one task, after every EncodeUnits task): write the manifest."""
    work: str
    out: str

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        _task_logging()
        merge(Path(self.work), Path(self.out))
        clear_slurm_claim(Path(self.out))
        return data


def _one_line_user_errors(record: dict) -> None:
    """loguru patcher: datatrove logs a failed task with its traceback; for a user error (bad
    input: a `MaskLabError`) the message is the whole story, so it is logged as one line."""
    exc = record["exception"]
    if exc is not None and isinstance(exc.value, MaskLabError):
        record["exception"] = None


def _task_logging():
    """Tasks log lines (never carriage-return bars) to their log files; user errors without a traceback."""
    from loguru import logger

    logger.configure(patcher=_one_line_user_errors)
    if not logging.getLogger("masklab").handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("masklab").addHandler(h)
        logging.getLogger("masklab").setLevel(logging.INFO)


def logs_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.logs"


def drop_stale_completions(work: Path, logging_dir: Path, n_units: int, tasks: int) -> None:
    """datatrove skips a task that has a completion marker (in the logs, next to the output), but
    the unit records live in the work directory, which bad input, a full disk or another corpus
    starts afresh: a marker holds only while every unit of its task has a record."""
    for rank in range(tasks):
        marker = logging_dir / "completions" / f"{rank:05d}"
        if marker.is_file() and not all(unit_record(work, i).is_file() for i in ranks_units(n_units, rank, tasks)):
            marker.unlink()


def run_datatrove_local(work: Path, out: Path, tasks: int, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor

    n = len(load_plan(work)["units"])
    tasks = max(1, min(tasks, n))
    logging_dir = logs_dir(out) / f"encode-{tasks}"
    drop_stale_completions(work, logging_dir, n, tasks)
    ex = LocalPipelineExecutor(pipeline=[EncodeUnits(str(work))], tasks=tasks, workers=max(1, min(workers, tasks)),
                               logging_dir=str(logging_dir), start_method="fork")
    ex.run()
    missing = ex.get_incomplete_ranks()
    if missing:
        raise IncompletePrep(f"{len(missing)} of {tasks} prep tasks did not finish (ranks {missing[:8]}); "
                        "rerun the same `masklab prep` to run only those")


def submit_slurm(work: Path, out: Path, tasks: int, partition: Optional[str], time_limit: str,
                 cpus_per_task: int, mem_per_cpu_gb: int) -> tuple[str, str]:
    """Submit the encode array job and the merge job (afterok) -> their Slurm job ids."""
    from datatrove.executor import SlurmPipelineExecutor

    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: sbatch is not on PATH (is this a Slurm login node?)")
    if not partition:
        raise ConfigError("--executor slurm needs --partition")
    n = len(load_plan(work)["units"])
    tasks = max(1, min(tasks, n))
    logs = logs_dir(out)
    drop_stale_completions(work, logs / f"encode-{tasks}", n, tasks)
    (logs / "merge" / "completions" / "00000").unlink(missing_ok=True)  # this work directory is not merged yet
    env = _job_env(logs)
    common = dict(time=time_limit, partition=partition, cpus_per_task=cpus_per_task, mem_per_cpu_gb=mem_per_cpu_gb,
                  qos="", env_command=env, mail_type="NONE", requeue_signals=None)
    encode = SlurmPipelineExecutor(pipeline=[EncodeUnits(str(work))], tasks=tasks, job_name="masklab-prep",
                                   logging_dir=str(logs / f"encode-{tasks}"), **common)
    final = SlurmPipelineExecutor(pipeline=[MergeStep(str(work), str(out))], tasks=1, depends=encode,
                                  job_name="masklab-prep-merge", logging_dir=str(logs / "merge"), **common)
    final.run()
    return str(encode.job_id), str(final.job_id)


def _job_env(logs: Path) -> str:
    """Shell lines that make a job run datatrove's launcher with this very interpreter (the one
    that has masklab installed): the console script datatrove calls may belong to another venv."""
    bin_dir = logs / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("launch_pickled_pipeline", "merge_stats"):
        launcher = bin_dir / tool
        launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m datatrove.tools.{tool} \"$@\"\n")
        launcher.chmod(0o755)
    keep = " ".join(f"{k}={os.environ[k]}" for k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM") if k in os.environ)
    return f"export PATH={bin_dir}:$PATH {keep}"


def wait_for_jobs(job_ids: list[str], timeout: float) -> None:
    import subprocess

    t0 = time.time()
    while time.time() - t0 < timeout:
        q = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], capture_output=True, text=True)
        if not q.stdout.strip():
            return
        time.sleep(1)
    raise TimeoutError(f"Slurm jobs {job_ids} still running after {timeout:.0f}s")
