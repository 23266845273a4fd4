"""Plugin code may fail, but may not end the process.

A ``sys.exit()`` left in a module, a ``KeyboardInterrupt`` raised to "cancel", a stray
``GeneratorExit``: these are BaseExceptions, which the engine's ``except Exception`` clauses
let through, so one plugin could end a command, even with exit code 0 and nothing printed.
The registry therefore runs every call into a plugin through :func:`call_plugin` (importing
it, calling its hooks) and hands out specs whose callables do the same (:func:`guard_spec`):
a BaseException escaping plugin code becomes a :class:`PluginError` naming the plugin, which
the engine reports like any other failure of that plugin or of the input it was reading.

A real Ctrl-C must still stop the command, but Python turns SIGINT into the same
KeyboardInterrupt a plugin can raise.  So the registry, before it runs plugin code, installs
:func:`install_interrupt_marker`: SIGINT then raises :class:`UserInterrupt`, a subclass that
the guard lets through (also when plugin code turned it into another BaseException).  Where
the marker cannot be in place (another SIGINT handler was there first), a KeyboardInterrupt
is let through as well: never swallowing the user's Ctrl-C is worth more than catching a
plugin's.  Outside the main thread no signal raises, so there it is always the plugin's.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel

from .errors import M3fmError

T = TypeVar("T")
Spec = TypeVar("Spec", bound=BaseModel)


class PluginError(M3fmError):
    """A plugin tried to end the process: its code called ``sys.exit()`` or raised
    KeyboardInterrupt, SystemExit or another exception that is not an ``Exception``.  m3fm
    stopped it there and reported that plugin (or the input it was reading) as failed.

    Fix: update the plugin the message names or uninstall its package (the message names it
    too), and tell the plugin's authors; the other plugins and inputs are not affected.
    """


class UserInterrupt(KeyboardInterrupt):
    """The KeyboardInterrupt of a real Ctrl-C, as raised by the marker for SIGINT."""


def install_interrupt_marker() -> None:
    """Make SIGINT raise :class:`UserInterrupt`, if it still has Python's default handler.

    Idempotent, and a no-op outside the main thread (only it may set signal handlers) or
    where a program installed its own handler.
    """
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise UserInterrupt


def call_plugin(owner: str, where: str, function: Callable[..., T], /,
                *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``, plugin code of `owner` (``plugin 'x' (package 1.0)``);
    a BaseException escaping it becomes a PluginError saying it came from `where`."""
    try:
        return function(*args, **kwargs)
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise
        if _from_user(exc):
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise UserInterrupt from exc
        raise PluginError(f"{owner} tried to stop the process in {where}: {exc!r}") from exc


def _from_user(exc: BaseException) -> bool:
    """Whether `exc` is the user's Ctrl-C, or was raised while handling it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, UserInterrupt):
            return True
        cause = cause.__context__
    if not isinstance(exc, KeyboardInterrupt):
        return False
    handler = signal.getsignal(signal.SIGINT)
    return (threading.current_thread() is threading.main_thread()
            and callable(handler) and handler is not _interrupt)


def guard_spec(spec: Spec, owner: str, label: str) -> Spec:
    """A copy of `spec` whose every callable field runs through :func:`call_plugin`;
    `label` (``modality 'ct'``) and the field's name say where in the plugin it failed."""
    return spec.model_copy(update={
        name: _guarded(value, owner, f"{label} {name}()")
        for name, value in spec if callable(value)
    })


def _guarded(function: Callable[..., T], owner: str, where: str) -> Callable[..., T]:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> T:
        return call_plugin(owner, where, function, *args, **kwargs)

    return guarded
