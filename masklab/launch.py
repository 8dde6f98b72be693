"""`python -m masklab.launch ...`: torchrun whose agent forwards SIGUSR1 to its workers.

Slurm's pre-emption warning (`--signal=USR1@T`) reaches the srun task, i.e. the torchrun agent,
whose default action for USR1 is to die and take the workers with it before they can save.
This wrapper makes the agent pass USR1 on to its child processes (the training ranks), which
save, agree on the stop step and exit 0; rank 0 requeues the job. Arguments are torchrun's.
"""
from __future__ import annotations

import os
import signal
import sys


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out


def _forward(signum, frame):
    for child in _children(os.getpid()):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass


def main() -> None:
    signal.signal(signal.SIGUSR1, _forward)
    from torch.distributed.run import main as torchrun

    sys.argv[0] = "torchrun"
    torchrun()


if __name__ == "__main__":
    main()
