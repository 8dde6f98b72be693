"""Test-only fault injection through `train(cfg, hooks=...)`.

`python -m tests.reliability.hooks STEP CONFIG [overrides...]` is `masklab train` with the loss
of optimizer step STEP made NaN on every rank (for torchrun / DeepSpeed tests)."""
import sys

import torch

from masklab.pretrain.loop.step import TrainHooks


class NanAt(TrainHooks):
    """Makes the loss of the given (0-based) optimizer steps NaN."""

    def __init__(self, steps):
        self.steps = set(steps)

    def after_forward(self, step: int, out: dict) -> None:
        if step in self.steps:
            out["loss_sum"] = out["loss_sum"] * torch.tensor(float("nan"))


if __name__ == "__main__":
    from masklab.config import load_config
    from masklab.pretrain.loop.train import train

    train(load_config(sys.argv[2], sys.argv[3:]), hooks=NanAt({int(sys.argv[1])}))
