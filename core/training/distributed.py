"""Data-parallel training over the processes ``torchrun`` starts, with torch.distributed.

Every collective the loop needs lives here, and each is a no-op (or the local value) in a
single process, so the loop reads the same with one rank or many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass
class Ranks:
    """This process's place among the ranks, read from the variables torchrun sets."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when :meth:`start` created the process group, so :meth:`stop` must destroy it."""

    @classmethod
    def from_environment(cls) -> Ranks:
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; one rank when absent."""
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def start(self, device: torch.device) -> None:
        """Join the process group (NCCL for CUDA, gloo for CPU) unless the caller already did."""
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        self.owns_group = True

    def stop(self) -> None:
        """Leave the process group if :meth:`start` created it."""
        if self.owns_group:
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, *, find_unused_parameters: bool) -> torch.nn.Module:
        """DistributedDataParallel around `model` (which already sits on its device)."""
        if not self.distributed:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )

    def reduce_step(self, loss: torch.Tensor, stop_requested: bool) -> tuple[float, bool]:
        """The mean loss over ranks and whether any rank was asked to stop, in one collective.

        A non-finite loss on any rank makes the mean non-finite, and a stop signal seen by any
        rank stops all, so every rank takes the same decision at the same step.
        """
        if not self.distributed:
            return loss.item(), stop_requested
        packed = torch.stack([loss.detach().float(), loss.new_tensor(float(stop_requested))])
        dist.all_reduce(packed)
        total_loss, stops = packed.tolist()
        return total_loss / self.world_size, stops > 0

    def same_on_all_ranks(self, value: int) -> bool:
        """Whether every rank holds the same integer (e.g. its number of batches)."""
        if not self.distributed:
            return True
        device = _collective_device()
        bounds = torch.tensor([value, -value], device=device)
        dist.all_reduce(bounds, op=dist.ReduceOp.MAX)
        return bounds[0].item() == -bounds[1].item()

    def gather_to_main(self, value: T) -> list[T]:
        """Every rank's `value` on rank 0, in rank order (other ranks get an empty list)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered or []

    def broadcast_from_main(self, value: T) -> T:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
