"""What a radiology workflow reads from `m3fm run`: DICOM Structured Reports, FHIR
DiagnosticReports, saliency heatmaps, and the out-of-distribution flag.

Each output file of an input is named by :func:`output_path`, so that two inputs with one file
name (``a/scan.dcm`` and ``b/scan.dcm``) never overwrite each other's files, and writing it
again for the same input replaces it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["output_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_path(out_dir: Path, source: Path, suffix: str) -> Path:
    """``OUT_DIR/<name>-<hash><suffix>``: `source`'s file name made safe for any file system
    (e.g. ``scan``, ``series``), then 8 hex digits of its absolute path's hash."""
    name = source.name
    for known in (".nii.gz", ".dcm", ".dicom", ".nii", ".png", ".jpg", ".jpeg", ".tif",
                  ".tiff"):
        if name.lower().endswith(known):
            name = name[: -len(known)]
            break
    safe = _UNSAFE.sub("_", os.fsencode(name).decode("ascii", errors="replace"))[:64]
    digest = hashlib.sha256(os.fsencode(source.absolute())).hexdigest()[:8]
    return out_dir / f"{safe.strip('._') or 'input'}-{digest}{suffix}"
