"""Process-group glue: world info from torchrun or Slurm variables, init, small collectives."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from masklab.errors import MaskLabError

log = logging.getLogger("masklab.distributed")


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK, else plain srun's SLURM_PROCID/NTASKS/LOCALID."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World()


def init(world: World, device: torch.device, timeout_s: int = 300) -> None:
    if not world.distributed or dist.is_initialized():
        return
    os.environ.setdefault("RANK", str(world.rank))
    os.environ.setdefault("WORLD_SIZE", str(world.world_size))
    os.environ.setdefault("LOCAL_RANK", str(world.local_rank))
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise MaskLabError("distributed run without MASTER_ADDR/MASTER_PORT: start it with torchrun or the slurm/ scripts")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # rendezvous timeouts, port in use, ...
        raise MaskLabError(f"process group init failed ({backend}, {os.environ['MASTER_ADDR']}:"
                           f"{os.environ['MASTER_PORT']}, rank {world.rank}/{world.world_size}): {e}") from None
    log.info("process group: %s rank %d/%d", backend, world.rank, world.world_size)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (all ranks agree on the stop step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
