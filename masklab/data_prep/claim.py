"""One prep per output: the claim on `<parent>/.<out>.partial` (the prep's work directory).

The claim is an exclusive, non-blocking flock on `.<out>.partial.lock`, a file beside the work
directory (the work directory itself is replaced and finally renamed onto `<out>`, so it cannot
carry a lasting lock). `masklab prep` takes it before it reads or writes the plan and holds it
until it returns: its pool workers and datatrove's local tasks are its children and run inside
that time. A second prep into the same `--out` fails at once, naming the holder (host, pid, start
time, command) from the lock file. So a work directory whose plan differs is never replaced
while its holder is alive.

`--executor slurm` without `--wait`: the submitting process exits while the jobs run, so the
claim also records the Slurm job ids; a later prep treats it as held while `squeue` still lists
any of them (and, without `squeue` on that machine, refuses and says how to clear it). The merge
job removes the record when it has written `<out>`.

Filesystems: flock is per open file on local disks; Linux maps it onto POSIX locks on NFS, which
lockd / NFSv4 share between nodes. Mounted with `nolock` (or `local_lock=flock`), NFS keeps the
lock on one node only, and Lustre needs `-o flock` (with `-o localflock` it is node-local): there
two preps on two nodes are not detected, and only the per-unit tokenizer / corpus bindings (a
merge refuses units encoded under another plan; `masklab verify` refuses a manifest that mixes
them) stand between the user and a mixed dataset. A filesystem that refuses flock outright gets a
warning and the prep runs unclaimed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from masklab.errors import DataError

log = logging.getLogger("masklab.data_prep")


def claim_path(out: Path) -> Path:
    return out.parent / f".{out.name}.partial.lock"


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 1 << 16) or b"{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, info: dict) -> None:
    raw = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, raw, 0)
    os.fsync(fd)


def _holder(info: dict) -> str:
    if not info:
        return "a process that left no details"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
            f"({' '.join(info.get('argv', []))[:200]})")


def queued_jobs(job_ids: list[str]) -> Optional[list[str]]:
    """-> the job ids of `job_ids` that squeue still lists, or None when it cannot tell."""
    if shutil.which("squeue") is None:
        return None
    q = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True,
                       check=False)
    if q.returncode != 0:
        return [] if "Invalid job id" in q.stderr else None  # ended and purged / the controller is down
    listed = {line.strip().split("_")[0] for line in q.stdout.splitlines() if line.strip()}
    return [j for j in job_ids if j in listed]


class PrepClaim:
    """Context manager: `with PrepClaim(out) as claim:` -> held for the block (see the module doc)."""

    def __init__(self, out: Path):
        self.out, self.path, self.fd = Path(out), claim_path(Path(out)), None
        self.slurm = False

    def __enter__(self) -> "PrepClaim":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise DataError(f"cannot open the prep claim {self.path} ({e.strerror}): is it a link or "
                                f"unwritable? {self.out} cannot be written safely") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read(fd)
                os.close(fd)
                raise DataError(f"another `masklab prep` is writing {self.out}: {_holder(info)} holds {self.path}; "
                                "wait for it to finish, or choose another --out") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                log.warning("cannot lock %s (%s): this filesystem does not support flock, so a second prep into "
                            "%s at the same time would not be detected", self.path, e.strerror, self.out)
            try:  # the file we locked must still be the one at the path (a holder removes it when done)
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = _read(fd)
        jobs = info.get("slurm_jobs") or []
        if jobs:
            queued = queued_jobs([str(j) for j in jobs])
            if queued is None or queued:
                os.close(fd)
                what = (f"still in the Slurm queue ({', '.join(queued)})" if queued else
                        f"Slurm jobs {', '.join(map(str, jobs))} whose state cannot be checked here (no squeue)")
                raise DataError(f"an earlier `masklab prep --executor slurm` into {self.out} is {what}; wait for "
                                f"it, scancel it, or choose another --out (when those jobs have ended, deleting "
                                f"{self.path} clears the claim)")
            log.info("the Slurm jobs %s of an earlier prep into %s have left the queue", ", ".join(jobs), self.out)
        self.fd = fd
        _write(fd, {"host": socket.gethostname(), "pid": os.getpid(), "argv": sys.argv,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")})

    def record_slurm(self, job_ids: list[str]) -> None:
        """The jobs now hold the claim (checked with squeue) after this process exits."""
        info = _read(self.fd)
        _write(self.fd, {**info, "slurm_jobs": [str(j) for j in job_ids]})
        self.slurm = True

    def release(self) -> None:
        if self.fd is None:
            return
        if not self.slurm:  # removed while still locked: a waiter that opened it re-checks the inode
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def clear_slurm_claim(out: Path) -> None:
    """Called by the Slurm merge job once `out` is written: the record of its jobs is no longer needed."""
    path = claim_path(Path(out))
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _read(fd).get("slurm_jobs"):
            path.unlink(missing_ok=True)
    except OSError:
        pass  # held: a new prep has it now
    finally:
        os.close(fd)
