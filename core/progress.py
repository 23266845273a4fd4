"""Progress bars for long work, on stderr so that stdout stays clean for JSON output."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")

SHOW_ABOVE = 5
"""Work of this many items or fewer finishes too fast to need a bar."""

_stderr = Console(stderr=True)


def track(
    items: Sequence[T] | Iterable[T], description: str, total: int | None = None
) -> Iterator[T]:
    """Iterate over `items`, showing a progress bar on stderr when there are many of them.

    `total` is the item count of an iterable without a length (a generator of results).
    """
    total = len(items) if total is None else total  # type: ignore[arg-type]
    yield from rich_track(
        items, description=description, total=total, console=_stderr,
        disable=total <= SHOW_ABOVE, transient=True,
    )
