"""Process-group glue: world info from torchrun or Slurm variables, init, small collectives.

Rank / world size / local rank come from torchrun (RANK, WORLD_SIZE, LOCAL_RANK), else from a
plain `srun` (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR then defaults to the first
host of the job and MASTER_PORT to 20000 + job id % 20000, as in slurm/pretrain.sbatch).
Rendezvous is env://, nccl on CUDA, gloo on CPU; train.dist_timeout_s bounds both the
rendezvous (a rank that never comes, a port that is taken) and every collective.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
import subprocess
import sys
import threading
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


def _slurm_master() -> None:
    """Plain srun (no torchrun): the first node of the job is the master; port from the job id."""
    env = os.environ
    if "MASTER_ADDR" not in env and env.get("SLURM_JOB_NODELIST"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True,
                                 text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            out = []
        if out:
            env["MASTER_ADDR"] = out[0]
    if "MASTER_PORT" not in env and env.get("SLURM_JOB_ID", "").isdigit():
        env["MASTER_PORT"] = str(20000 + int(env["SLURM_JOB_ID"]) % 20000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(world: World, device: torch.device, timeout_s: int = 300, single_group: bool = False) -> None:
    """Join the process group of a distributed run. `single_group`: a one-process run that still
    needs a group (DeepSpeed, which otherwise falls back to MPI discovery and dies without mpi4py)
    gets a world of one on 127.0.0.1 and a free port."""
    if dist.is_initialized():
        return
    if not world.distributed:
        if not single_group:
            return
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("RANK", str(world.rank))
    os.environ.setdefault("WORLD_SIZE", str(world.world_size))
    os.environ.setdefault("LOCAL_RANK", str(world.local_rank))
    if "SLURM_PROCID" in os.environ:
        _slurm_master()
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise MaskLabError("distributed run without MASTER_ADDR/MASTER_PORT: start it with torchrun or the slurm/ scripts")
    backend = "nccl" if device.type == "cuda" else "gloo"
    where = f"{backend}, {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}, rank {world.rank}/{world.world_size}"
    # torch's own timeout does not cover every wait: a TCPStore client whose MASTER_PORT is taken by
    # some other service connects and then waits for a reply forever. A watchdog ends that.
    watchdog = threading.Timer(timeout_s + 5, _rendezvous_hung, (where, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # rendezvous timeouts, port in use, ...
        raise MaskLabError(f"process group init failed ({where}): {e}") from None
    finally:
        watchdog.cancel()
    log.info("process group: %s rank %d/%d on node %s", backend, world.rank, world.world_size,
             os.environ.get("SLURMD_NODENAME") or socket.gethostname())


def _rendezvous_hung(where: str, timeout_s: int) -> None:
    print(f"masklab train: error: process group init failed ({where}): no rendezvous within train.dist_timeout_s="
          f"{timeout_s}s (is MASTER_PORT taken by another program, or did a rank not start?)",
          file=sys.stderr, flush=True)
    os._exit(2)


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


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (a small picklable value: it travels between our own ranks only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
