"""Progress of a training run: a tqdm bar on a terminal, periodic log lines otherwise.

Under Slurm (or CI, or `> log`) stderr is a file: a redrawn bar becomes one line of carriage
returns per update in the `.out` file. A non-TTY stderr gets one plain log line per logged step
instead, at most one every `every_s` seconds (the last step always), with the step, loss,
tokens/s and an ETA.
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("masklab.train")


class TrainProgress:
    def __init__(self, total: int, initial: int, enabled: bool, every_s: float = 30.0, tty: bool | None = None):
        self.total, self.step, self.enabled, self.every = total, initial, enabled, every_s
        self.start_step, self.t0, self.last = initial, time.time(), float("-inf")
        self.bar = None
        if enabled and (sys.stderr.isatty() if tty is None else tty):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def logged(self, step: int, loss: float, acc: float, tokens_per_s: float) -> None:
        """Called on log steps (step = steps done) with that step's values."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", tok_s=f"{tokens_per_s:.0f}")
            return
        now, self.step = time.time(), step
        if not self.enabled or (now - self.last < self.every and self.step < self.total):
            return
        self.last = now
        done = self.step - self.start_step
        eta = (now - self.t0) / done * (self.total - self.step) if done else float("nan")
        log.info("step %d/%d (%.0f%%): loss %.4f, masked acc %.3f, %.0f tokens/s, eta %s", self.step, self.total,
                 100 * self.step / max(self.total, 1), loss, acc, tokens_per_s, _duration(eta))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(s: float) -> str:
    if s != s:  # nan
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
