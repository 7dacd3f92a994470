"""Multi-process training and scoring under ``torchrun``: process group, sharding, gathering.

``torchrun --nproc-per-node N -m maskaudit scan ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here degrades to a single process (rank 0 of 1) and costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands: rank r of world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes outputs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: str) -> ProcessGroup:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU); a single process if not launched so.

    On CUDA each process takes the GPU of its LOCAL_RANK.
    """
    if not launched_by_torchrun():
        return ProcessGroup()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def local_device(device: str, group: ProcessGroup) -> str:
    """``cuda:<local_rank>`` for multi-process CUDA runs, else ``device`` unchanged."""
    return f"cuda:{group.local_rank}" if group.active and device.startswith("cuda") else device


def shard_range(count: int, group: ProcessGroup) -> range:
    """The contiguous rows ``start:stop`` of ``count`` that this process handles."""
    bounds = np.linspace(0, count, group.world_size + 1).round().astype(int)
    return range(int(bounds[group.rank]), int(bounds[group.rank + 1]))


def sum_across(array: np.ndarray, group: ProcessGroup) -> np.ndarray:
    """Element-wise sum of ``array`` over all processes (identity in a single process)."""
    if not group.active:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy().astype(array.dtype)


def broadcast_buffers(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Give every process the main process's buffers of ``module`` (e.g. BatchNorm statistics, which
    each process updates from its own batches between DDP's own broadcasts)."""
    if group.active:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(value, group: ProcessGroup) -> list:
    """Every process's ``value``, in rank order ([value] in a single process)."""
    if not group.active:
        return [value]
    gathered: list = [None] * group.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(group: ProcessGroup) -> None:
    if group.active:
        dist.barrier()


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group. Every process must call this at the same point: a process that
    destroys its group while another still holds it can abort the other (gloo, SIGABRT)."""
    if group.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
