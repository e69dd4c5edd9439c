"""Distributed data parallel: one process per device under torchrun, which sets RANK / WORLD_SIZE /
LOCAL_RANK; a plain run is the world of one process."""
from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import torch.distributed as dist

from audiocap.errors import ConfigError


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order (every rank receives the list)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device: str) -> Distributed:
    """One process per device under torchrun (gloo on CPU, nccl on GPU); a plain run otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():  # also: PyTorch built without CUDA
            raise ConfigError(f"config key device=cuda: PyTorch sees {torch.cuda.device_count()} CUDA device(s), this "
                              f"process needs cuda:{local_rank}; use device=cpu or device=auto")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(rank, world_size, torch.device(device))


def gradient_sync(sync: bool, *modules) -> contextlib.ExitStack:
    """A context in which the DDP modules among `modules` all-reduce gradients in backward only if `sync`:
    accumulating k batches, the k-1 first skip it and the last reduces the sum of all k."""
    stack = contextlib.ExitStack()
    if not sync:
        for module in modules:
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                stack.enter_context(module.no_sync())
    return stack
