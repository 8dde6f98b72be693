"""One run per out_dir: an exclusive `fcntl.flock` on `<out_dir>/.lock`, held by rank 0 for the run.

The kernel drops the lock when its holder dies (kill -9 included), so a stale lock never blocks
a restart. flock is honoured on local file systems, on NFSv4 (Linux emulates it with POSIX
locks there) and on Lustre/GPFS mounted with locking enabled (`flock`/`localflock` options);
on a mount without lock support the lock cannot exclude a second run on another node.
The lock file holds its holder (host, pid, start time) for the message a second run prints.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from masklab.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = Path(run_dir) / LOCK_FILE
        self.enabled = enabled
        self.fd = None
        self.created_dir = False

    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        self.created_dir = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            try:
                h = json.loads(holder)
                who = f"host {h['host']}, pid {h['pid']}, started {h['started']}"
            except (ValueError, KeyError, TypeError):
                who = "holder unknown"
            raise ConfigError(f"train.out_dir={self.path.parent} is in use by another run ({who}): wait for it to "
                              "finish, or use another train.out_dir") from None
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        if self.created_dir and os.listdir(self.path.parent) == [LOCK_FILE]:  # a run that wrote nothing leaves nothing
            self.path.unlink()
            self.path.parent.rmdir()
