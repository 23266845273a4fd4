"""The training progress bar: step/max, loss and steps per second, on stderr like
:mod:`m3fm.progress`, so that stdout stays clean for JSON output.
"""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _StepsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f} steps/s", style="progress.data.speed")


class TrainingProgress:
    """A rich progress bar over optimiser steps; shows nothing when `enabled` is False.

    It draws on stderr unless given another `console`.
    """

    def __init__(
        self, *, max_steps: int, start_step: int, enabled: bool, console: Console | None = None
    ) -> None:
        self._enabled = enabled
        self._progress = Progress(
            TextColumn("[progress.description]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            _StepsPerSecond(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
            transient=True,
        )
        self._task = self._progress.add_task(
            "training", total=max_steps, completed=start_step, loss="–"
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def advance(self, step: int, loss: float) -> None:
        self._progress.update(self._task, completed=step, loss=f"{loss:.4g}")

    def note(self, message: str) -> None:
        """Print a line above the bar (e.g. why the run is stopping)."""
        if self._enabled:
            self._progress.console.print(message)
