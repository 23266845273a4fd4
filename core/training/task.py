"""The contract between a training stage and the generic loop: what a stage hands over
(:class:`TrainingTask`) and what it gets back (:class:`TrainResult`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class TrainingTask:
    """A model, its data and its loss, as one stage (alignment, generation, …) defines them.

    Tensors inside a batch (also nested in dicts, lists and tuples) are moved to the training
    device by the loop; ``evaluate`` gets the model already on that device.
    """

    model: torch.nn.Module
    batches: Callable[[int], Sequence[Any]]
    """epoch -> this rank's batches for that epoch, the same list every time it is asked.

    The task shards the data by rank itself (``torch.distributed.get_rank()``) and gives every
    rank the same number of batches.  The loop reads it from the step where the run stands,
    through its ``iterate(start)`` method when it has one (a
    :class:`~m3fm.training.loader.PlannedBatches` builds batches ahead in worker processes),
    else by index, so it may load lazily.
    """
    loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    """(model as the loop wrapped it — DDP and/or compiled —, batch) -> (loss, logs to record)."""
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    """Runs on rank 0 with the unwrapped model in eval mode, without gradients."""
    save_artifacts: Callable[[Path], None] | None = None
    """Writes config.json, tokenizer files … into a checkpoint directory next to the weights."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Data, split, recipe …: copied into every checkpoint's metadata.json."""
    find_unused_parameters: bool = False
    """Set when a step may leave parameters without gradient (e.g. a multi-domain model uses
    one image tower per batch); DDP then looks for them each step, which costs a little time."""


@dataclass(frozen=True)
class TrainResult:
    """How a finished run ended."""

    step: int
    loss: float
    """Mean loss (over ranks) of the last optimiser step."""
    metrics: dict[str, float]
    """The last evaluation's metrics (empty when the task has no ``evaluate``)."""
    checkpoint: Path
    """The final model directory, ``OUT/final``."""
