"""Equal compute: each cell's train.max_steps from a budget in steps, real tokens or executed FLOPs.

Tokens and FLOPs per step are measured, not assumed: the cell's own collator builds the batches
of `estimate_steps` steps spread over the run (what the masking schedule reaches), and
pretrain/loop/flops.py charges them as the training log does (late insertion's lower layers on
the visible stream, Token Dropping's middle layers on kept rows). Token budgets (data.batch_tokens)
take their first steps in order (their step boundaries are sequential).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from masklab.errors import ConfigError


@dataclass
class PerStep:
    tokens: float  # mean real (non-pad) tokens per optimizer step
    flops: float  # mean executed fwd + bwd matmul FLOPs per optimizer step
    steps_measured: int


def measure(cfg, n: int = 16) -> PerStep:
    """Build the batches of n steps of `cfg` (single process) and count them."""
    from masklab.data_prep.shards import ShardSet
    from masklab.pretrain.data.collator import Collator
    from masklab.pretrain.data.steps import SampleBudget, make_budget
    from masklab.pretrain.hf import init_from
    from masklab.pretrain.loop.flops import batch_flops
    from masklab.pretrain.model import padded_vocab_size

    cfg = init_from.configure(cfg)  # continued pretraining: the model is the source's
    shards = ShardSet(cfg.data.shards, "train")
    c = Collator(cfg, shards)
    budget = make_budget(c, cfg, 0, 1)
    T = int(cfg.train.max_steps)
    if isinstance(budget, SampleBudget):
        plans = [budget.plan(int(s)) for s in np.unique(np.linspace(0, T - 1, min(n, T)).astype(int))]
    else:
        plans = list(budget.plans(0, min(n, T), 0))
    m = cfg.model
    vocab = m.vocab_size or padded_vocab_size(shards.tokenizer.vocab_size, m.pad_vocab_multiple)
    insert = cfg.masking.insert_layer if cfg.masking.insertion == "late" else 0
    tokens = flops = 0.0
    for step, ranges in plans:
        for first, count in ranges:
            b = c(np.arange(first, first + count, dtype=np.int64), step)
            tokens += b.num_tokens
            flops += batch_flops(m, vocab, b, insert, shards.tokenizer.special_ids)
    return PerStep(tokens / len(plans), flops / len(plans), len(plans))


def per_unit(p: PerStep, equalise: str) -> float:
    return {"steps": 1.0, "tokens": p.tokens, "flops": p.flops}[equalise]


def steps_for(cfg, equalise: str, amount: float, n: int = 16) -> tuple[int, PerStep]:
    """-> (train.max_steps that spends `amount` of `equalise`, the per-step measurement). Schedules
    depend on max_steps, so the measurement is repeated once at the computed length."""
    if equalise == "steps":
        return max(1, int(round(amount))), measure(_with_steps(cfg, max(1, int(round(amount)))), n)
    p = measure(cfg, n)
    steps = max(1, math.ceil(amount / per_unit(p, equalise) - 1e-9))
    if cfg.masking.schedule != "constant" or cfg.masking.insertion == "late":
        p = measure(_with_steps(cfg, steps), n)
        steps = max(1, math.ceil(amount / per_unit(p, equalise) - 1e-9))
    if steps > 10_000_000:
        raise ConfigError(f"compute.amount={amount:g} {equalise} needs {steps} steps: check the unit")
    return steps, p


def _with_steps(cfg, steps: int):
    return OmegaConf.merge(cfg, {"train": {"max_steps": steps}})
