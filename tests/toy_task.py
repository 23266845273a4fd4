"""A tiny regression task for the training-loop tests.

Imported by the tests, and run as a script where a test needs another process: one that gets
Ctrl-C, or the two ranks ``torchrun`` starts::

    python tests/toy_task.py OUT [--max-steps N] [--sleep S] [--resume] [--hash-dir DIR]
                                 [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m3fm.registry.errors import M3fmError
from m3fm.training import (
    LoaderSettings,
    PlannedBatches,
    PlannedLoader,
    TrainConfig,
    TrainingTask,
    train,
)

SAMPLES = 64
FEATURES = 4
HIDDEN = 16


def toy_dataset(seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """64 noisy samples of a fixed non-linear function of 4 features."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5, 1.5])) + 0.1 * torch.randn(
        SAMPLES, generator=generator
    )
    return x, y


class ToyRegressor(nn.Module):
    """A two-layer MLP; dropout makes the loss depend on the RNG, the unused tower mimics a
    multi-domain model whose other towers get no gradient in a step."""

    def __init__(self, dropout: float = 0.1, unused_tower: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Dropout(dropout), nn.Linear(HIDDEN, 1)
        )
        self.unused = nn.Linear(FEATURES, FEATURES) if unused_tower else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def toy_task(
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    global_batch: int = 8,
    dropout: float = 0.1,
    sleep: float = 0.0,
    poisoned_batch: tuple[int, int] | None = None,
    crash_at_step: int | None = None,
    unused_tower: bool = False,
    workers: int = 0,
) -> TrainingTask:
    """The task as rank `rank` of `world_size` sees it, its batches built in `workers`
    DataLoader processes (0: in-process).

    Each epoch shuffles the data from (seed, epoch) and cuts it into global batches; rank r
    takes the r-th slice of each, so the ranks' batches together are the one-process batches.
    `poisoned_batch` = (epoch, index) fills that batch with NaN; `crash_at_step` raises an
    exception instead of computing that step's loss, like a process that dies.
    """
    x, y = toy_dataset()
    torch.manual_seed(seed)
    model = ToyRegressor(dropout=dropout, unused_tower=unused_tower)
    per_rank = global_batch // world_size
    calls = 0

    def plan(epoch: int) -> list[torch.Tensor]:
        """This rank's sample indices of each batch of `epoch`."""
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(seed * 997 + epoch))
        return [order[start + rank * per_rank : start + (rank + 1) * per_rank]
                for start in range(0, SAMPLES - global_batch + 1, global_batch)]

    def load(mine: torch.Tensor, place: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = x[mine]
        if poisoned_batch == place:
            inputs = torch.full_like(inputs, float("nan"))
        return inputs, y[mine]

    loader = PlannedLoader(load, _as_loaded, LoaderSettings(workers=workers))

    def batches(epoch: int) -> PlannedBatches:
        return loader.epoch(plan(epoch), epoch)

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        nonlocal calls
        calls += 1
        if calls == crash_at_step:
            raise RuntimeError("simulated crash")
        if sleep:
            time.sleep(sleep)
        inputs, targets = batch
        prediction = model(inputs)
        return nn.functional.mse_loss(prediction.float(), targets), {"batch_size": len(inputs)}

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"mse": nn.functional.mse_loss(model(x), y).item()}

    def save_artifacts(directory: Path) -> None:
        config = {"features": FEATURES, "hidden": HIDDEN, "dropout": dropout}
        (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")

    return TrainingTask(
        model=model,
        batches=batches,
        loss=loss,
        evaluate=evaluate,
        save_artifacts=save_artifacts,
        metadata={"data": "toy-regression", "split": "train", "samples": SAMPLES},
        find_unused_parameters=unused_tower,
    )


def _as_loaded(plan: torch.Tensor, batch: Any) -> Any:
    return batch


def toy_config(**overrides: Any) -> TrainConfig:
    """A 12-step run that logs every step; `overrides` replace any field."""
    settings: dict[str, Any] = {"max_steps": 12, "lr": 1e-2, "warmup_steps": 2, "log_every": 1}
    return TrainConfig(**{**settings, **overrides})


def parameter_hash(model: nn.Module) -> str:
    """A digest of every parameter's exact bits, to compare models across processes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hash-dir", type=Path, help="write this rank's parameter hash here")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args(argv)
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    task = toy_task(
        rank=rank,
        world_size=world_size,
        dropout=args.dropout,
        sleep=args.sleep,
        unused_tower=world_size > 1,
        workers=args.workers,
    )
    try:
        train(task, toy_config(max_steps=args.max_steps), args.out_dir, resume=args.resume)
    except M3fmError as error:
        print(f"m3fm: error: {error}", file=sys.stderr)
        return error.exit_code
    if args.hash_dir is not None:
        (args.hash_dir / f"rank-{rank}.txt").write_text(parameter_hash(task.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
