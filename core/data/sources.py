"""File-level reading shared by every reader: finding the file, decoding it, splitting it into rows.

Everything here fails with :class:`DataFormatError` and a one-line message naming the file,
because a problem at this level (no file, not JSON, no header) makes the whole data set
unreadable, unlike a bad row.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from m3fm.registry import DataFormatError


def detector(check: Callable[[Path], bool]) -> Callable[[Path], bool]:
    """Make a format check answer False, rather than raise, for a path it cannot read.

    Detection probes arbitrary user paths (missing, unreadable, binary, odd names) and the
    DatasetSpec contract says it must not raise.
    """

    @functools.wraps(check)
    def detect(path: Path) -> bool:
        try:
            return bool(check(Path(path)))
        except (DataFormatError, OSError, ValueError, csv.Error):
            return False

    return detect


def locate(path: Path, file_names: Collection[str], suffixes: Collection[str]) -> Path:
    """The data set's index file: `path` itself if it is a file with one of `suffixes`,
    else the one of `file_names` present in the folder `path`."""
    path = Path(path).absolute()
    if path.is_file():
        if path.suffix.lower() not in suffixes:
            raise DataFormatError(f"{path}: expected a {' or '.join(sorted(suffixes))} file")
        return path
    if not path.is_dir():
        raise DataFormatError(f"{path}: no such file or folder")
    found = [path / name for name in file_names if (path / name).is_file()]
    if not found:
        raise DataFormatError(f"{path}: no {' or '.join(file_names)} in this folder")
    if len(found) > 1:
        raise DataFormatError(
            f"{path}: holds {' and '.join(file_names)}; pass the path of the one to read"
        )
    return found[0]


def read_text(path: Path) -> str:
    """The file's text; UTF-8, with or without the byte-order mark that spreadsheet tools write."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_json(path: Path) -> Any:
    """A whole JSON document; a syntax error is reported with its line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise DataFormatError(f"{path}: JSON nested too deeply to read") from exc


def split_lists(path: Path) -> Iterator[tuple[str, int, Any]]:
    """``(split, index, entry)`` for an R2Gen-style annotation file, ``{split: [entry, ...]}``.

    Every top-level key is a split, so a published test split is read when present.
    """
    document = load_json(path)
    if not isinstance(document, dict) or not document:
        raise DataFormatError(f"{path}: expected an object of splits, e.g. {{\"train\": [...]}}")
    for split, entries in document.items():
        if not isinstance(entries, list):
            raise DataFormatError(f"{path}: split {split!r} must be a list of entries")
    for split, entries in document.items():
        for index, entry in enumerate(entries):
            yield split, index, entry


def first_entry(path: Path) -> Any:
    """The first entry of the first non-empty split, for cheap format detection; None if none."""
    document = load_json(path)
    if isinstance(document, dict):
        for entries in document.values():
            if isinstance(entries, list) and entries:
                return entries[0]
    return None


def csv_rows(
    path: Path, required: Collection[str]
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the ``(line, values)`` rows of a CSV file, `line` being where a row starts.

    Line numbers are the file's own (a quoted field may span lines), so a problem can be
    found with any editor.  Blank lines are not rows.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise DataFormatError(f"{path}: missing column(s) {', '.join(missing)} in the header")
        rows = []
        start = reader.line_num + 1
        for values in reader:
            if values:
                rows.append((start, values))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataFormatError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from exc
    return header, rows


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file, read without reading the rest (for format detection)."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        return [name.strip() for name in next(csv.reader(file), [])]


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` for each non-blank line (JSON Lines).

    Only ``\\n`` ends a line: JSON strings may hold other Unicode line separators.
    """
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if line.strip():
            yield number, line.rstrip("\r")
