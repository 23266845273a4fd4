"""Turning the paths a user names into the inputs a modality reads, lazily.

A folder is either one input (a DICOM series, for modalities that read folders) or a
collection of inputs (every accepted file below it). Missing or unacceptable paths are kept,
so that each becomes a per-input error later instead of silently vanishing.

Inputs are listed as they are found, each folder's entries sorted, so that a folder of a
hundred thousand files starts processing at once and the listing holds one folder at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from m3fm.filetypes import DICOM_SUFFIXES
from m3fm.registry import ModalitySpec

SERIES_FILE_SUFFIXES = {*DICOM_SUFFIXES, ""}  # series files often have no suffix at all


def is_dicom_series(folder: Path) -> bool:
    """A folder of DICOM files only (no subfolders), which scanners write for one series."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    return bool(entries) and all(
        entry.is_file() and entry.suffix.lower() in SERIES_FILE_SUFFIXES for entry in entries
    )


def iter_inputs(spec: ModalitySpec, paths: Iterable[Path]) -> Iterator[Path]:
    """The inputs named by `paths`, in order, folders expanded as they are walked, duplicates
    removed.

    Only overlapping arguments (a path inside another one) can name an input twice; only then
    are the inputs found remembered, so that the usual listing keeps no per-file state.
    """
    named = list(dict.fromkeys(paths))
    nested = _any_nested(named)
    seen: set[Path] = set()
    for path in named:
        for found in _inputs_at(spec, path):
            if nested:
                if found in seen:
                    continue
                seen.add(found)
            yield found


def collect_inputs(spec: ModalitySpec, paths: Iterable[Path]) -> list[Path]:
    """:func:`iter_inputs` as a list, for callers that need the count first."""
    return list(iter_inputs(spec, paths))


def _any_nested(named: list[Path]) -> bool:
    folders = set(named)
    return any(parent in folders for path in named for parent in path.parents)


def _inputs_at(spec: ModalitySpec, path: Path) -> Iterator[Path]:
    if not path.is_dir() or (spec.accepts_directories and is_dicom_series(path)):
        yield path
        return
    empty = True
    for file in _files_below(spec, path):
        empty = False
        yield file
    if empty:
        yield path  # an empty folder stays, to be reported as an error


def _files_below(spec: ModalitySpec, folder: Path) -> Iterator[Path]:
    """Accepted files below `folder`, depth first, each folder's entries sorted by name (the
    order of sorting all their paths). Not only regular files: a pipe or socket named like an
    image is reported, not skipped. Links to folders are not followed (no cycles); unreadable
    subfolders are skipped."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = folder / entry.name
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        if is_folder:
            if not entry.is_symlink():
                yield from _files_below(spec, path)
        elif spec.accepts(path):
            yield path
