"""`masklab prep`: corpus -> tokenizer -> train/validation shards + manifest.

Streaming and parallel: the corpus is cut into fixed units (`data_prep/sources.py`), the
tokenizer is trained on a bounded sample (`plan.py`), units are encoded by a local process
pool or by datatrove tasks (`executors.py`), and a final merge writes the manifest
(`merge.py`). The output is the same bytes (manifest timestamp aside) for any `--num-proc`,
`--executor` or `--tasks`.

Everything is written into `<parent>/.<out>.partial/` and moved onto `<out>` only when
complete, so a failure leaves the output directory as it was. Bad input removes the work
directory; an interrupted run (a killed task, Ctrl-C) keeps it, and rerunning the same
command redoes only the missing units.
"""
from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from masklab.atomic import refuse_overlap
from masklab.data_prep import executors
from masklab.data_prep.claim import PrepClaim
from masklab.data_prep.merge import IncompletePrep, merge
from masklab.data_prep.plan import PlanOptions, make_plan, work_dir
from masklab.data_prep.sources import MAX_DOCUMENT_BYTES
from masklab.errors import ConfigError, DataError

log = logging.getLogger("masklab.data_prep")
EXECUTORS = ("none", "local", "slurm")


@dataclass
class PrepOptions:
    source: str = "pydoc"
    out: str = "runs/data"
    text_column: str = "text"
    tokenizer: Optional[str] = None  # existing tokenizer.json / dir; None = train one
    tokenizer_kind: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True
    validation_fraction: float = 0.05
    max_documents: Optional[int] = None
    cjk_segmenter: Optional[str] = None  # jieba
    shard_tokens: int = 50_000_000
    num_proc: int = 1
    seed: int = 0
    overwrite: bool = False
    chunk_bytes: int = 64 << 20  # a unit of work: files above this are split by byte ranges
    tokenizer_sample_bytes: int = 1 << 30
    max_document_bytes: int = MAX_DOCUMENT_BYTES  # longer documents / lines are skipped with a count
    executor: str = "none"  # none (process pool of num_proc) | local | slurm (datatrove)
    tasks: int = 1
    partition: Optional[str] = None
    slurm_time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    wait: bool = False  # slurm: block until the merge job has finished


def _check(opts: PrepOptions) -> None:
    out = Path(opts.out)
    inputs = {"--corpus": opts.source, "--tokenizer": opts.tokenizer}
    refuse_overlap(out, inputs)  # also `--out .`: the current directory is never replaced
    refuse_overlap(work_dir(out), inputs, flag="--out's work directory")
    if out.exists() and any(out.iterdir()) and not opts.overwrite:
        raise DataError(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
    if not 0.0 <= opts.validation_fraction < 1.0:
        raise DataError(f"validation fraction {opts.validation_fraction} must lie in [0, 1)")
    if opts.executor not in EXECUTORS:
        raise ConfigError(f"--executor '{opts.executor}' is not one of {', '.join(EXECUTORS)}")
    for name in ("num_proc", "tasks", "chunk_bytes", "shard_tokens", "tokenizer_sample_bytes", "vocab_size",
                 "max_document_bytes"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(opts, name)})")
    if opts.max_documents is not None and (opts.num_proc > 1 or opts.executor != "none"):
        raise ConfigError("--max-documents keeps the first documents in corpus order: use it with --num-proc 1 "
                          "and no --executor")


def prepare(opts: PrepOptions) -> Path:
    _check(opts)
    with PrepClaim(Path(opts.out)) as claim:  # one prep per output, for the whole prep (data_prep/claim.py)
        return _prepare(opts, claim)


def _prepare(opts: PrepOptions, claim: PrepClaim) -> Path:
    out = Path(opts.out)
    work = work_dir(out)
    t0 = time.time()
    plan_opts = PlanOptions(**{k: getattr(opts, k) for k in PlanOptions.__dataclass_fields__})
    try:
        plan = make_plan(plan_opts, work)
        log.info("%d units of work from %s", len(plan["units"]), opts.source)
        if opts.executor == "slurm":
            ids = executors.submit_slurm(work, out, opts.tasks, opts.partition, opts.slurm_time,
                                         opts.cpus_per_task, opts.mem_per_cpu_gb)
            claim.record_slurm(list(ids))  # the jobs hold the claim while squeue lists them
            log.info("submitted Slurm jobs %s (encode, %d tasks) and %s (merge); %s appears when the merge ends "
                     "(logs in %s)", ids[0], opts.tasks, ids[1], out, executors.logs_dir(out))
            if opts.wait:
                executors.wait_for_jobs(list(ids), timeout=7 * 24 * 3600)
                claim.slurm = False  # the jobs are over: this process's claim ends with it
                if work.exists() or not (out / "manifest.json").is_file():  # the merge moves `work` onto `out`
                    raise DataError(f"the Slurm prep jobs {ids} ended without writing {out}; see the logs in "
                                    f"{executors.logs_dir(out)}; rerun the same command to redo only failed tasks")
            return out
        if opts.executor == "local":
            executors.run_datatrove_local(work, out, opts.tasks, opts.num_proc)
        else:
            executors.run_pool(work, plan, opts.num_proc)
        merge(work, out)
    except IncompletePrep:
        raise  # the work directory stays: a rerun finishes only the missing units
    except DataError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        shutil.rmtree(work, ignore_errors=True)
        raise DataError(f"No space left on device while writing {e.filename or work}; {out} is unchanged and the "
                        "partial output was removed") from None
    log.info("prep done in %.1fs -> %s", time.time() - t0, out)
    return out
