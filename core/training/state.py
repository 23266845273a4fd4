"""``training_state.pt``: everything beyond the weights that a resumed run needs to continue
exactly where it stopped — optimiser, schedule, loss scale, random generators, data position.

It is read with ``torch.load(weights_only=True)``: only tensors, numbers, strings and plain
containers come back, never objects whose unpickling could run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from m3fm.checkpoint import CheckpointError

TRAINING_STATE_NAME = "training_state.pt"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """The resumable state of a run after optimiser step `step`."""

    step: int
    epoch: int
    batch_index: int
    """Index within `epoch` of the next batch to train on (may equal the epoch's length)."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    grad_scaler: dict[str, Any]
    rng: list[dict[str, Any]]
    """One entry per rank, see :func:`m3fm.training.rng.capture_rng_state`."""
    last_loss: float

    def save(self, path: Path) -> None:
        """Write the state with ``torch.save`` (tensors stay on their device)."""
        record = {field.name: getattr(self, field.name) for field in fields(self)}
        torch.save({"format": FORMAT_VERSION, **record}, path)

    @classmethod
    def load(cls, path: Path, *, map_location: torch.device | str = "cpu") -> TrainingState:
        """Read a state written by :meth:`save`, refusing anything that is not plain data."""
        try:
            record = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"no {TRAINING_STATE_NAME} in {Path(path).parent}") from None
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            detail = str(error).strip().splitlines()[0]
            raise CheckpointError(f"refusing to load {path}: {detail}") from None
        if not isinstance(record, dict) or record.pop("format", None) != FORMAT_VERSION:
            raise CheckpointError(f"{path} is not a training state written by this m3fm version")
        return cls(**record)
