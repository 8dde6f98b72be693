"""Training metrics: a JSONL log (the record tests compare), TensorBoard and W&B (train.loggers);
the matmul peak probe (FLOP accounting is flops.py)."""
from __future__ import annotations

import errno
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Optional

import torch

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.metrics")


class MetricsLog:
    """Append-only JSONL (one object per logged step) + TensorBoard scalars, rank 0 only.

    On resume, records past the resumed step are dropped first, so a run that was killed
    after logging but before checkpointing never shows a step twice; a torn last line (a
    kill or a full disk mid-write) is cut off. Each record is one `write` of a whole line
    on an O_APPEND descriptor, so a reader never sees half a record followed by another."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int = 0,
                 wandb: Optional[dict] = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        self.wb = None
        self.fd: Optional[int] = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.write_text("".join(l + "\n" for l in _records_up_to(self.path, resume_step)))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                self.tb = None
        if wandb is not None:
            self.wb = _wandb_run(Path(run_dir), **wandb)

    def log(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        rec = {"step": step, **{k: (float(v) if isinstance(v, (float, torch.Tensor)) else v) for k, v in record.items()}}
        line = (json.dumps(rec) + "\n").encode()
        try:
            if os.write(self.fd, line) != len(line):
                raise OSError(errno.ENOSPC, "No space left on device (short write)")
        except OSError as e:
            reason = "No space left on device" if e.errno == errno.ENOSPC else e.strerror
            raise MaskLabError(f"{reason} while writing {self.path}; the checkpoints in "
                               f"{self.path.parent / 'checkpoints'} are intact") from None
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log({k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}, step=step)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()
            self.wb = None


def active_loggers(tc) -> list[str]:
    """train.loggers, corrected by the old train.tensorboard flag where a config still sets it."""
    out = [x for x in tc.loggers if not (x == "tensorboard" and tc.tensorboard is False)]
    return out + ["tensorboard"] if tc.tensorboard is True and "tensorboard" not in out else out


def _wandb_run(run_dir: Path, project: str, group: str, config: dict):
    """A W&B run whose id is a hash of the run directory, so a resumed run continues the same W&B run
    (WANDB_MODE=offline writes under run_dir/wandb)."""
    import hashlib

    try:
        import wandb
    except ImportError:
        raise MaskLabError("train.loggers includes wandb, but wandb is not installed "
                           "(pip install 'masklab[wandb]', or drop wandb from train.loggers)") from None
    run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return wandb.init(project=project, group=group or os.environ.get("WANDB_RUN_GROUP") or None, dir=str(run_dir),
                      id=run_id, resume="allow", config=config, reinit="finish_previous")


def _records_up_to(path: Path, step: int) -> list[str]:
    """The complete lines of metrics.jsonl with step <= `step`; reading stops at a torn line."""
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            log.warning("%s: cut at a torn line (%r...): everything after it is dropped", path, line[:40])
            break
        if rec is not None and rec.get("step", 0) <= step:
            keep.append(line)
    return keep


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_peak_flops(device: torch.device, dtype=torch.float32, n: int = 1024, reps: int = 3) -> float:
    """Measured dense matmul FLOP/s of this machine, best of `reps` (the denominator of utilisation;
    peak.probe_size picks n: 8192 on CUDA)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: cuBLAS heuristics, clocks
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
