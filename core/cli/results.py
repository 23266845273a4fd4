"""Per-input results shown as they come: to ``--out``, to stdout, errors on stderr.

`m3fm run`, `embed` and `preprocess` share this, so that each writes a finished input at once
(a crash later keeps it), prints ``{"input", "error"}`` objects on stdout with ``--json``
exactly as it writes them to ``--out``, and never fails on a file name that is not UTF-8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import click

from m3fm.outputs import ResultsFile, json_text, shown_path


@dataclass
class Tally:
    """How many inputs finished and how many of them failed."""

    done: int = 0
    failed: int = 0


def emit_results(
    results: Iterable[dict], *, out: ResultsFile | None, as_json: bool,
    render: Callable[[dict], str] | None,
) -> Tally:
    """Write and show each result the moment it arrives; `render` makes the text for people
    (None: nothing on stdout without ``--json``)."""
    tally = Tally()
    for result in results:
        line = json_text(result)
        if out is not None:
            out.write(line)
        tally.done += 1
        if "error" in result:
            tally.failed += 1
            click.echo(f"m3fm: error: {shown_path(' '.join(result['error'].split()))}",
                       err=True)
        if as_json:
            click.echo(line)
        elif render is not None and "error" not in result:
            click.echo(shown_path(render(result)))
    return tally
