"""Everything a training run holds between steps, and how it is built from the config."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError
from masklab.pretrain.loop import distributed as D
from masklab.pretrain.hf import init_from
from masklab.pretrain.data.collator import Collator, data_compat, eval_batches, open_collator
from masklab.pretrain.loop.engine import DeepSpeedEngine, Engine
from masklab.pretrain.loop.metrics import matmul_peak_flops
from masklab.pretrain.loop.peak import Peak, probe_size, spec_peak_flops
from masklab.pretrain.model import build_model, padded_vocab_size
from masklab.pretrain.model.memory import check_model_fits
from masklab.pretrain.model.compile import prepare_for_device
from masklab.pretrain.loop.resume import resume_compat
from masklab.pretrain.data.steps import StepDataset, make_budget


@dataclass
class RunState:
    cfg: Any
    world: D.World
    device: torch.device
    run_dir: Path
    shards: ShardSet
    collator: Collator
    dataset: StepDataset
    micro_batch: int
    compat: dict
    eval_set: list
    autocast: contextlib.AbstractContextManager
    model: Optional[torch.nn.Module] = None
    engine: Optional[Engine] = None
    ckpt: Optional[Path] = None  # the checkpoint this run continues (None: from step 0)
    start: int = 0
    step: int = 0
    nan_run: int = 0  # non-finite steps in a row
    nan_total: int = 0  # both as of the latest read of `nonfinite` (log / eval / save steps)
    nonfinite: Any = None  # NonFiniteCounter: the device-side skip counts
    busy_s: float = 0.0  # host time of the steps since the previous log line
    busy_steps: int = 0
    first_eval: Optional[dict] = None
    last: dict = field(default_factory=dict)  # the latest logged record
    t_log: float = 0.0  # perf_counter at the previous log line
    data_position: Optional[int] = None  # the data cursor of `start` (from the checkpoint; None: from the step)
    loader: Any = None  # the step loader: its sampler knows the data cursor of every step it reached
    # compute so far (saved in checkpoints, so a resumed run continues the count): real tokens of all ranks
    # (a float64 device scalar, read on log / eval / save steps only) and executed FLOPs (flops.py, this
    # rank's count x world size)
    tokens_seen: Any = 0.0
    flops_seen: float = 0.0

    @property
    def use_ds(self) -> bool:
        return self.cfg.train.launcher == "deepspeed"

    @property
    def tokenizer_dir(self) -> Path:
        return Path(self.cfg.data.shards) / "tokenizer"


def pick_device(name: str, world: D.World) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but CUDA is not available (use train.device=cpu)")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def setup(cfg) -> RunState:
    """Process group, device, data and the resume compatibility keys: everything but the model."""
    world = D.world_from_env()
    tc = cfg.train
    if tc.launcher == "single" and world.distributed:
        raise ConfigError(f"train.launcher=single, but this process is rank {world.rank} of {world.world_size} "
                          "(started by torchrun/srun): use train.launcher=auto, ddp or deepspeed")
    device = pick_device(tc.device, world)
    D.init(world, device, tc.dist_timeout_s, single_group=tc.launcher == "deepspeed")
    if tc.num_threads > 0 and device.type == "cpu":
        torch.set_num_threads(tc.num_threads)
    shards = ShardSet(cfg.data.shards, "train")
    has_val = shards.manifest["counts"].get("validation", {}).get("documents")
    val = ShardSet(cfg.data.shards, "validation") if has_val else None
    mb = cfg.data.micro_batch_size or cfg.data.batch_size // world.world_size
    collator = open_collator(cfg, shards, world)  # rank 0 builds the sample index once, the others map it
    try:
        dataset = StepDataset(collator, budget=make_budget(collator, cfg, world.rank, world.world_size))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    compat = resume_compat(cfg, world, "deepspeed" if tc.launcher == "deepspeed" else "torch",
                           shards.manifest["tokenizer"]["sha256"])
    compat.update(data_compat(cfg, shards))
    eval_set = eval_batches(Collator(cfg, val), mb, cfg.data.eval_batches) if val is not None else []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
    return RunState(cfg, world, device, Path(tc.out_dir), shards, collator, dataset, mb, compat, eval_set, autocast)


def build_engine(run: RunState) -> None:
    """The model (seeded) and the engine that steps it."""
    tc = run.cfg.train
    torch.manual_seed(tc.seed)
    m = run.cfg.model  # weights, gradients and AdamW state must fit before anything is allocated
    zero = 8 + 8 / run.world.world_size if run.use_ds else None  # ZeRO-1/2: AdamW's moments are partitioned
    check_model_fits(m, m.vocab_size or padded_vocab_size(run.shards.tokenizer.vocab_size, m.pad_vocab_multiple),
                     training=True, device=run.device, per_param=zero)
    model = build_model(run.cfg.model, run.shards.tokenizer, run.cfg.masking, run.cfg.kernels.backend).to(run.device)
    if run.ckpt is None:  # a new run; a resume takes its weights from its own checkpoint
        init_from.load_weights(model, run.cfg)
    run.model = prepare_for_device(model, tc, run.device)
    if run.use_ds:
        budget = run.dataset.budget
        run.engine = DeepSpeedEngine(run.model, tc, run.device, run.world, budget.micro_samples, run.dataset.accum,
                                     budget.global_samples)
    else:
        run.engine = Engine(run.model, tc, run.device, run.world)


def utilisation_peak(run: RunState) -> Peak:
    """Matmul FLOP/s in the training dtype, measured (8192^3 on CUDA, 1024^3 on CPU: peak.py) and from
    the spec sheet (CUDA only): the denominators of `utilisation` and `utilisation_spec`."""
    bf16 = run.cfg.train.precision == "bf16" and run.device.type == "cuda"
    dtype = torch.bfloat16 if bf16 else torch.float32
    n, reps = probe_size(run.device)
    return Peak(matmul_peak_flops(run.device, dtype, n=n, reps=reps), spec_peak_flops(run.device, dtype), n)
