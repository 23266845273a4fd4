"""The run's metrics: ``metrics.jsonl`` (one JSON object per line) and, when the optional
``tensorboard`` package is installed, the same scalars as TensorBoard events.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from m3fm.checkpoint import atomic_write_text

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = {"kind", "step", "epoch", "wall_time"}


class MetricsLog:
    """Appends records to ``OUT/metrics.jsonl`` and mirrors their numbers to TensorBoard.

    A resumed run first drops the records written after its checkpoint's step: that part of
    the run is trained again, and the log must read like one uninterrupted run.
    """

    def __init__(self, out_dir: Path, *, resumed_step: int | None = None) -> None:
        self.path = Path(out_dir) / METRICS_NAME
        if resumed_step is not None and self.path.exists():
            _truncate_after(self.path, resumed_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        purge_step = None if resumed_step is None else resumed_step + 1
        self._tensorboard = open_tensorboard(Path(out_dir) / TENSORBOARD_DIR, purge_step)

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (which holds at least ``kind`` and ``step``) and flush it to disk."""
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in _NOT_SCALARS and isinstance(value, numbers.Real):
                    self._tensorboard.add_scalar(
                        f"{record['kind']}/{key}", value, record["step"], record.get("wall_time")
                    )

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    """A TensorBoard SummaryWriter, or None when the tensorboard package is not installed.

    `purge_step` hides the events a crashed run wrote after the step it resumes from.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file; a last line cut short by a crash is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _truncate_after(path: Path, step: int) -> None:
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
