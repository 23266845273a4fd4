"""Stopping a run on Ctrl-C (SIGINT) or a scheduler's SIGTERM without losing its progress.

A KeyboardInterrupt raised wherever Python happens to be could land halfway through an
optimiser update, leaving weights that belong to no step.  Instead the first signal only sets a
flag; the loop finishes the current step, saves a checkpoint and raises
:class:`TrainingInterrupted`.  A second signal gets the previous handler back (Ctrl-C then
raises KeyboardInterrupt at once, without saving).  torchrun forwards the signal it receives to
every worker, and the loop makes all ranks agree on the step at which they stop.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Self

from m3fm.registry.errors import M3fmError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(M3fmError):
    """The run stopped on a signal after saving a checkpoint it can be resumed from.

    Fix: nothing was lost; run the same command again with ``--resume`` to continue.
    """

    exit_code = 130  # what shells report for a process ended by Ctrl-C


class StopRequest:
    """A context in which the first SIGINT/SIGTERM is recorded instead of acted upon.

    Signal handlers can only be installed from the main thread; elsewhere signals keep their
    usual behaviour (Python delivers them to the main thread anyway).
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
