"""Multi-GPU launch: what ``torchrun`` tells a process, its slice of the data, its device and DDP wrapper.

Kept apart from the QAT loop so the loop reads as one training recipe; everything here is a no-op for a
single process (``WORLD_SIZE`` absent or 1).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UsageError
from .device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """What ``torchrun`` tells this process (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(environ: dict | None = None) -> DistEnv:
    """Parse the torchrun environment; single-process when ``WORLD_SIZE`` is absent or 1."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UsageError(f"bad torchrun environment ({exc})", "WORLD_SIZE, RANK and LOCAL_RANK must be integers") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"bad torchrun environment: RANK={rank} LOCAL_RANK={local} WORLD_SIZE={world}",
                         "Launch with torchrun --nproc_per_node N")
    return DistEnv(rank=rank, local_rank=local, world_size=world)


def shard(items: Sequence, env: DistEnv) -> list:
    """This rank's slice of ``items`` (``items[rank::world]``, DistributedSampler style)."""
    return list(items[env.rank::env.world_size])


def setup_device(requested: str | None, env: DistEnv) -> torch.device:
    """This process's device: ``requested`` alone, or ``cuda:LOCAL_RANK`` (gloo on CPU) under torchrun."""
    if not env.distributed:
        return resolve_device(requested)
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def wrap_ddp(student, env: DistEnv, device: torch.device):
    """The student as a DDP replica when distributed, else unchanged."""
    if not env.distributed:
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
