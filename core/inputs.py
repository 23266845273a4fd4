"""Turning the paths a user names into the list of inputs a modality reads.

A folder is either one input (a DICOM series, for modalities that read folders) or a
collection of inputs (every accepted file below it). Missing or unacceptable paths are kept,
so that each becomes a per-input error later instead of silently vanishing.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def collect_inputs(spec: ModalitySpec, paths: Iterable[Path]) -> list[Path]:
    """The inputs named by `paths`, in order, folders expanded, duplicates removed."""
    inputs: dict[Path, None] = {}
    for path in paths:
        if not path.is_dir() or (spec.accepts_directories and is_dicom_series(path)):
            inputs[path] = None
            continue
        # Not only regular files: a pipe or socket named like an image is reported, not skipped.
        found = sorted(p for p in path.rglob("*") if not p.is_dir() and spec.accepts(p))
        for file in found or [path]:  # an empty folder stays, to be reported as an error
            inputs[file] = None
    return list(inputs)
