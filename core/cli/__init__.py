"""The `m3fm` command line.

Every failure a user can cause is reported as one line, ``m3fm: error: <what and how to fix>``,
with exit code 2 for wrong arguments or names and 1 for anything else; a traceback is shown
only with ``M3FM_DEBUG=1``.  Commands that print results take ``--json`` for machines.

The verbs live in the modules of this package; importing them registers them on :data:`cli`.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from m3fm.cli import evaluation, inputs, ood, plugins, run, serve, training  # noqa: F401  (register verbs)
from m3fm.cli.app import cli
from m3fm.outputs import shown_path
from m3fm.registry import M3fmError

__all__ = ["cli", "main"]


def _fail(message: str, code: int) -> None:
    click.echo(f"m3fm: error: {shown_path(' '.join(message.split()))}", err=True)
    sys.exit(code)


OUT_OF_MEMORY = ("out of memory; use fewer or smaller inputs at a time (a smaller "
                 "decode.batch_size or --beams), or a machine with more memory")


class _WarningEcho(logging.Handler):
    """Shows m3fm's warnings (skipped rows, unreadable images) on stderr, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        message = shown_path(" ".join(record.getMessage().split()))
        click.echo(f"m3fm: warning: {message}", err=True)


def _show_warnings() -> None:
    logger = logging.getLogger("m3fm")
    if not any(isinstance(handler, _WarningEcho) for handler in logger.handlers):
        logger.addHandler(_WarningEcho(level=logging.WARNING))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning every expected failure into one line and an exit code."""
    _show_warnings()
    try:
        code = cli.main(args=argv, prog_name="m3fm", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "m3fm"
        _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except M3fmError as exc:
        _fail(str(exc), exc.exit_code)
    except MemoryError:
        _fail(OUT_OF_MEMORY, 1)
    except OSError as exc:
        if os.environ.get("M3FM_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc} (the operating system refused a file operation)",
              1)
    except Exception as exc:
        if os.environ.get("M3FM_DEBUG"):
            raise
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, on a GPU; no torch import here
            _fail(OUT_OF_MEMORY, 1)
        _fail(f"internal error: {type(exc).__name__}: {exc}"
              " (set M3FM_DEBUG=1 for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)

