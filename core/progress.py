"""Progress bars for long work, on stderr so that stdout stays clean for JSON output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")

SHOW_ABOVE = 5
"""Work of this many items or fewer finishes too fast to need a bar."""

_stderr = Console(stderr=True)


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate over `items`, showing a progress bar on stderr when there are many of them."""
    yield from rich_track(
        items, description=description, console=_stderr, disable=len(items) <= SHOW_ABOVE,
        transient=True,
    )
