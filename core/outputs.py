"""Writing results so that nothing finished is lost and no two processes write one file.

* :class:`ResultsFile` opens a ``--out`` file for one process only (an advisory ``flock`` that
  the kernel drops when the process dies, even by ``kill -9``), checks it before any model is
  loaded, and only then truncates it, or, resuming, appends after its last complete line.
* :func:`lock_directory` gives a run folder (``m3fm train --out``) to one process at a time.
* :func:`json_text` encodes results losslessly, file names that are not valid UTF-8 included.

Locks are POSIX ``flock`` locks; on systems without ``fcntl`` (Windows) they are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from m3fm.registry import M3fmError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".m3fm.lock"
"""The lock file :func:`lock_directory` keeps inside a run folder."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class OutputError(M3fmError):
    """An output file or folder cannot be written: its folder is missing, it is a folder, it
    is not writable, or the disk filled up while writing.

    Fix: give a writable file path in an existing folder (``--out results.jsonl``), or free
    disk space; results already written before the failure are kept, and the message says how
    many.
    """


class OutputBusyError(M3fmError):
    """Another process is writing the same output file or training into the same folder;
    two writers would interleave or truncate each other's results.

    Fix: wait for the other process to finish (the message names it), or give this one
    another ``--out``.
    """


def json_text(value: object, **options: object) -> str:
    """JSON of `value`, lossless for file names that are not valid UTF-8.

    Python reads such names with PEP 383's ``surrogateescape`` (each undecodable byte ``0xNN``
    becomes the lone surrogate ``U+DCNN``).  Those are written as ``\\udcNN`` escapes, so the
    JSON stays valid UTF-8 and ``os.fsencode(json.loads(text)["input"])`` gives back the
    exact bytes of the name.  Everything else is written as readable UTF-8.
    """
    text = json.dumps(value, ensure_ascii=False, default=str, **options)  # type: ignore[arg-type]
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def shown_path(text: Path | str) -> str:
    """A path (or a message naming one) for people: the undecodable bytes of a file name as
    ``\\xNN`` instead of a crash when it is printed."""
    return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def check_output_path(path: Path, option: str = "--out") -> None:
    """Refuse an output path that cannot work, before anything expensive starts."""
    if path.is_dir():
        raise OutputError(f"{option} {shown_path(path)} is a folder; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{option} {shown_path(path)}: folder {shown_path(parent)} does not "
                          "exist")
    if not os.access(parent, os.W_OK) and not path.exists():
        raise OutputError(f"{option} {shown_path(path)}: folder {shown_path(parent)} is not "
                          "writable")


class ResultsFile:
    """A JSON Lines file of per-input results, held by this process, each line flushed.

    Opening checks the path and takes the lock without truncating, so that a second process
    given the same file is refused before it can destroy the first one's results; the file is
    emptied only when the first result arrives (or :meth:`empty` is called), so a run that
    fails before producing anything leaves the previous results in place.

    With `resume` the file is kept and appended to; a last line without its newline (left by
    a kill in the middle of a write) is cut off first, so that no result is glued to it.
    """

    def __init__(self, path: Path, option: str = "--out", resume: bool = False) -> None:
        self.path, self.option, self.written = path, option, 0
        self._emptied = resume
        check_output_path(path, option)
        try:
            descriptor = os.open(path, (os.O_RDWR if resume else os.O_WRONLY) | os.O_CREAT,
                                 0o666)
        except OSError as error:
            raise OutputError(f"{option} {shown_path(path)}: cannot write it: "
                              f"{error.strerror}") from None
        try:
            _lock(descriptor, f"{option} {shown_path(path)}")
        except BaseException:
            os.close(descriptor)
            raise
        if resume and stat.S_ISREG(os.fstat(descriptor).st_mode):
            try:
                end = _complete_length(descriptor)
                os.ftruncate(descriptor, end)
                os.lseek(descriptor, end, os.SEEK_SET)
            except OSError as error:
                os.close(descriptor)
                raise write_failure(error, path, 0, option) from None
        self._file = open(descriptor, "w", encoding="utf-8", closefd=True)  # noqa: SIM115

    def empty(self) -> None:
        """Truncate the file now, unless this run has done so (or is resuming it)."""
        try:
            if not self._emptied and stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
                self._file.truncate(0)
        except OSError as error:
            raise write_failure(error, self.path, self.written, self.option) from None
        self._emptied = True

    def write(self, line: str) -> None:
        """Append one line (a JSON text) and flush it, so it survives a later crash."""
        self.empty()
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as error:
            raise write_failure(error, self.path, self.written, self.option) from None
        self.written += 1

    def close(self) -> None:
        if self._file.closed:
            return
        _unlock(self._file.fileno())
        try:
            self._file.close()
        except OSError as error:  # the last flush can still find the disk full
            raise write_failure(error, self.path, self.written, self.option) from None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _complete_length(descriptor: int, chunk: int = 1 << 16) -> int:
    """Bytes up to and including the file's last newline: its complete lines."""
    end = os.fstat(descriptor).st_size
    while end > 0:
        start = max(0, end - chunk)
        newline = os.pread(descriptor, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def write_failure(error: OSError, path: Path, written: int, option: str = "--out") -> OutputError:
    """The OutputError for a failed write, saying what was kept."""
    cause = ("the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT)
             else error.strerror or type(error).__name__)
    return OutputError(f"{option} {shown_path(path)}: writing failed ({cause}); the first "
                       f"{written} results are in the file")


def save_text(path: Path, text: str, option: str) -> None:
    """Replace `path` with `text` atomically (readers see the old or the new file, never half
    of one), turning a failure into an OutputError naming `option`."""
    from m3fm.checkpoint import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as error:
        path.with_name(f".{path.name}.partial").unlink(missing_ok=True)
        raise write_failure(error, path, 0, option) from None


@contextlib.contextmanager
def lock_directory(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` (created if needed) for this process until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _lock(descriptor, what, names_holder=True)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        _unlock(descriptor)
        os.close(descriptor)  # closing releases the lock


def _lock(descriptor: int, what: str, names_holder: bool = False) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor) if names_holder else ""
        raise OutputBusyError(f"{what} is in use by another m3fm process{holder}; wait for it "
                              "to finish or choose another output") from None
    except OSError:  # a file system without locks (some network mounts): go on unlocked
        return
    _HELD_LOCKS.add(descriptor)


def _unlock(descriptor: int) -> None:
    """Forget `descriptor` before it is closed (closing releases its lock)."""
    _HELD_LOCKS.discard(descriptor)


_HELD_LOCKS: set[int] = set()
"""Descriptors whose flock this process holds."""


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker), close its copies of the parent's locked
    descriptors: a flock lives as long as any copy is open, so a worker outliving a killed
    parent by a few seconds would otherwise keep the parent's output busy."""
    for descriptor in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def _holder(descriptor: int) -> str:
    try:
        text = os.pread(descriptor, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
