"""Progress bars for long work, on stderr so that stdout stays clean for JSON output."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")

SHOW_ABOVE = 5
"""Work of this many items or fewer finishes too fast to need a bar."""

_stderr = Console(stderr=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items`, showing a progress bar on stderr when there are many of them.

    `total` is the item count of an iterable without a length (a generator of results); when
    neither is known (inputs listed as they are found) the bar only shows that work goes on.
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    yield from rich_track(
        items, description=description, total=total, console=_stderr,
        disable=total is not None and total <= SHOW_ABOVE, transient=True,
    )
