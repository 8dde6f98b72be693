"""Progress of a local prep: one tqdm bar on a terminal (tokens/s, bytes), log lines otherwise.

A redrawn bar in a log file (Slurm `.out`, CI) is a wall of carriage returns, so a non-TTY
stderr gets one line every `every_s` seconds instead.
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("masklab.data_prep")


class ProgressBar:
    def __init__(self, total_bytes: int, every_s: float = 30.0):
        self.bytes = self.tokens = 0
        self.total = total_bytes
        self.t0 = self.last = time.time()
        self.every = every_s
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, desc="prep", dynamic_ncols=True)

    def update(self, nbytes: int, ntokens: int) -> None:
        self.bytes += nbytes
        self.tokens += ntokens
        rate = self.tokens / max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix_str(f"{self.tokens / 1e6:.1f}M tokens, {rate / 1e3:.0f}k tok/s", refresh=False)
        elif time.time() - self.last >= self.every:
            self.last = time.time()
            log.info("prep: %.1f / %.1f MB read, %.1fM tokens, %.0fk tokens/s", self.bytes / 1e6, self.total / 1e6,
                     self.tokens / 1e6, rate / 1e3)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
