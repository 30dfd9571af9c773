"""The training device, and data-parallel training over processes started by `torchrun`.

    torchrun --standalone --nproc-per-node=2 -m deepfm train --config ...      # 2 processes, one machine
    torchrun --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        --rdzv-id=JOB -m deepfm train --config ...                              # on each of 2 machines

torchrun gives every process RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in its environment;
`process_group` joins them with `torch.distributed.init_process_group()` (gloo on CPU, NCCL on CUDA,
one GPU per process: cuda:LOCAL_RANK), as PyTorch's DDP tutorial does. The model is wrapped in
`DistributedDataParallel`, which averages the gradients of every step over the processes; `World`
carries the few other collectives the trainer needs (sums, gathered predictions, buffers from rank 0).
A process that torchrun did not start is a world of one and trains exactly as without this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from deepfm.errors import ConfigError, DeepFMError

DEVICES = ("auto", "cpu", "cuda")
WORLD_SIZE_ENV = "WORLD_SIZE"  # set by torchrun in every process it starts
LOCAL_RANK_ENV = "LOCAL_RANK"


def resolve_device(setting: str) -> torch.device:
    """The device `training.device` names for this process: cuda:LOCAL_RANK for CUDA.

    Args:
        setting: auto (CUDA when available, else CPU) | cpu | cuda.
    """
    if setting not in DEVICES:
        raise ConfigError(f"unknown training.device {setting!r}, expected one of {DEVICES}")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"training.device=cuda, but CUDA is not available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); use training.device=cpu or auto"
        )
    local_rank, count = int(os.environ.get(LOCAL_RANK_ENV, "0")), torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"LOCAL_RANK={local_rank} but {count} CUDA devices are visible: at most one process per GPU")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class World:
    """This process among the training processes: rank `rank` of `size`, training on `device`.

    Collectives run on `device` under NCCL and on the CPU under gloo; with `size` 1 every method is the
    identity and no collective is called.
    """

    rank: int
    size: int
    device: torch.device

    @classmethod
    def current(cls, device_setting: str) -> World:
        """The world of the joined process group, or of this process alone."""
        device = resolve_device(device_setting)
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device)
        launched = int(os.environ.get(WORLD_SIZE_ENV, "1"))
        if launched > 1:  # else every process would train its own model and write its own run
            raise DeepFMError(
                f"started by torchrun ({WORLD_SIZE_ENV}={launched}) but not in its process group: "
                "run `python -m deepfm train`, or call inside deepfm.training.distributed.process_group()"
            )
        return cls(0, 1, device)

    @property
    def is_primary(self) -> bool:
        """Rank 0: the one process that logs, writes the run directory and exports."""
        return self.rank == 0

    @property
    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == dist.Backend.NCCL else torch.device("cpu")

    def share(self, batch_size: int) -> int:
        """This process's rows of a step of `batch_size` rows over all processes."""
        if batch_size % self.size:
            raise ConfigError(
                f"training.batch_size={batch_size} must be a multiple of the {self.size} processes: "
                "it is the rows of one step, split evenly over them"
            )
        return batch_size // self.size

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in DistributedDataParallel (which broadcasts rank 0's weights now), or itself alone."""
        if self.size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks, in float64."""
        if self.size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(total)
        return [float(v) for v in total.tolist()]

    def gather_blocks(self, local: Tensor, block: int, total: int) -> Tensor:
        """Every rank's rows, in rank order, on every rank, on the CPU.

        Args:
            local: this rank's rows: rows [rank * block, min((rank + 1) * block, total)) of the whole.
            block: rows per rank (the last ranks hold fewer, or none).
            total: rows of the whole.

        Returns:
            (total, ...) tensor.
        """
        if self.size == 1 or total == 0:
            return local.cpu()
        padded = torch.zeros((block, *local.shape[1:]), dtype=local.dtype, device=self._collective_device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat(parts)[:total].cpu()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics), as DDP does before each forward."""
        if self.size == 1:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


@contextmanager
def process_group(device_setting: str) -> Iterator[World]:
    """Join the torchrun job this process belongs to for the duration of the block.

    Without torchrun (no WORLD_SIZE in the environment), or when a process group is already joined,
    nothing is initialised. Ranks but 0 log warnings and errors only.

    Args:
        device_setting: `training.device`; it picks the backend: NCCL for CUDA, gloo for CPU.
    """
    if WORLD_SIZE_ENV not in os.environ or dist.is_initialized():
        yield World.current(device_setting)
        return
    device = resolve_device(device_setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    library_logger = logging.getLogger("deepfm")
    level = library_logger.level
    try:
        world = World.current(device_setting)
        if not world.is_primary:
            library_logger.setLevel(logging.WARNING)
        yield world
    finally:
        library_logger.setLevel(level)
        dist.destroy_process_group()
