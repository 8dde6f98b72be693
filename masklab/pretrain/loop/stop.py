"""Stop requests: Slurm's pre-emption warning (SIGUSR1) versus a cancel (SIGTERM) or Ctrl-C (SIGINT).

The sbatch scripts ask for `--signal=USR1@180`: USR1 means "the job is about to be pre-empted
or hit its time limit": save, requeue, resume later. SIGTERM is what `scancel` (and a node
shutdown) sends: save and stop, never requeue; for node failures Slurm's own `--requeue` policy
decides whether the job comes back.
"""
from __future__ import annotations

import logging
import signal
import subprocess
from typing import Optional

log = logging.getLogger("masklab.train")


class StopFlag:
    """SIGUSR1/SIGTERM/SIGINT -> save at the next step boundary and exit; `requeue` only after
    SIGUSR1. Ctrl-C (SIGINT) saves like SIGTERM; a second Ctrl-C aborts at once (KeyboardInterrupt:
    the CLI exits 130, the previous checkpoint stays the latest)."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.set = False
        self.signal: Optional[int] = None
        self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            log.warning("second Ctrl-C: aborting without saving")
            raise KeyboardInterrupt
        if not self.set:
            hint = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
            log.warning("received %s: will save and stop at the end of this step%s", signal.Signals(signum).name, hint)
        # a cancel (or Ctrl-C) that follows a pre-emption warning wins: the job must not come back
        if self.signal not in (signal.SIGTERM, signal.SIGINT) or signum == signal.SIGINT:
            self.signal = signum
        self.set = True

    @property
    def requeue(self) -> bool:
        return self.signal == signal.SIGUSR1

    def close(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def requeue(job_id: str) -> None:
    """Put the Slurm job back in the queue (it restarts with SLURM_RESTART_COUNT+1 and resumes).
    Slurm kills the job's steps at once, so this runs only after every rank has saved."""
    log.info("requeueing Slurm job %s", job_id)
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("scontrol requeue %s failed: %s (resubmit by hand; the checkpoint is saved)", job_id, e)
        return
    if r.returncode != 0:
        log.warning("scontrol requeue %s failed: %s (submit with --requeue; the checkpoint is saved)", job_id,
                    r.stderr.strip())
