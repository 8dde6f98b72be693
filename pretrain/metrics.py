"""Training metrics: a JSONL log (the record tests compare) and TensorBoard; FLOP accounting."""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Optional

import torch


class MetricsLog:
    """Append-only JSONL (one object per logged step) + TensorBoard scalars, rank 0 only.

    On resume, records past the resumed step are dropped first, so a run that was killed
    after logging but before checkpointing never shows a step twice."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [l for l in self.path.read_text().splitlines()
                    if l.strip() and json.loads(l).get("step", 0) <= resume_step]
            self.path.write_text("".join(l + "\n" for l in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                self.tb = None

    def log(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        rec = {"step": step, **{k: (float(v) if isinstance(v, (float, torch.Tensor)) else v) for k, v in record.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_peak_flops(device: torch.device, dtype=torch.float32, n: int = 1024, reps: int = 3) -> float:
    """Measured dense matmul FLOP/s of this machine (the denominator of utilisation)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
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


def step_flops(model_cfg, vocab: int, seq_lens: torch.Tensor, n_pred: int, n_tokens: Optional[int] = None) -> float:
    """Executed FLOPs of fwd + bwd (3x fwd) for one unpadded micro-batch: matmuls only."""
    d, i, L = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers
    T = int(seq_lens.sum()) if n_tokens is None else n_tokens
    mlp = (3 if model_cfg.preset == "modernbert" else 2) * d * i
    dense = 2 * T * L * (4 * d * d + mlp)
    attn = 4 * L * d * float((seq_lens.double() ** 2).sum())
    head = 2 * n_pred * (d * d + d * vocab)
    return 3.0 * (dense + attn + head)
