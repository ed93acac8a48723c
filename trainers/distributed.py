"""Data-parallel training under torchrun: the process's place, its device, its share of each batch.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them this is one process. Every
rank draws the same batches (same sampler seed) and takes every world-th sample of each, so the
ranks together see exactly the batch a single process would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from core.device import resolve_device
from lmdb_builders.reader import MixedKindBatchSampler


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes the outputs."""
        return self.rank == 0


def training_device(requested: str, dist_info: DistInfo) -> torch.device:
    """The device this process trains on (cuda:LOCAL_RANK under torchrun), made current; cuDNN set
    to deterministic algorithms so that a seed gives the same weights. A device this machine lacks
    (``cuda`` without a GPU, ``gpu``) is ``core.device.DeviceError``, one line."""
    device = resolve_device(requested)
    if device.type == "cuda":
        if dist_info.on:
            device = resolve_device(torch.device("cuda", dist_info.local_rank))
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def init_process_group(device: torch.device, dist_info: DistInfo) -> None:
    if dist_info.on:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def destroy_process_group(dist_info: DistInfo) -> None:
    if dist_info.on:
        dist.destroy_process_group()


def barrier(dist_info: DistInfo) -> None:
    if dist_info.on:
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, dist_info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else itself."""
    if not dist_info.on:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True)  # a rank's share of a batch may lack a kind (e.g. no landmark sample)


class RankSlice:
    """Rank ``rank`` of ``world`` takes every world-th sample of each batch of a batch sampler."""

    def __init__(self, batch_sampler: MixedKindBatchSampler, rank: int = 0, world: int = 1):
        self.sampler, self.rank, self.world = batch_sampler, rank, world
        if batch_sampler.batch_size < world:
            raise ValueError(f"batch size {batch_sampler.batch_size} is smaller than the {world} processes")

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield batch[self.rank :: self.world]
