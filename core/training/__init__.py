"""The generic training loop shared by every stage (alignment, report generation, …).

A stage describes its model, data and loss as a :class:`TrainingTask`; :func:`train` runs it
with AdamW and a warm-up + cosine schedule, on one process or many under ``torchrun``, with
AMP and ``torch.compile`` on CUDA, atomic resumable checkpoints and a JSONL metrics log.
"""

from m3fm.training.config import TrainConfig
from m3fm.training.interrupt import TrainingInterrupted
from m3fm.training.loader import LoaderSettings, PlannedBatches, PlannedLoader
from m3fm.training.loop import FINAL_DIR, NonFiniteLossError, train
from m3fm.training.rng import seed_everything
from m3fm.training.runtime import Runtime, resolve_runtime
from m3fm.training.task import TrainingTask, TrainResult

__all__ = [
    "FINAL_DIR",
    "LoaderSettings",
    "NonFiniteLossError",
    "PlannedBatches",
    "PlannedLoader",
    "Runtime",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingTask",
    "resolve_runtime",
    "seed_everything",
    "train",
]
