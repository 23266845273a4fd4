"""File types of medical images, by suffix.

Kept apart from :mod:`m3fm.imaging` because it imports nothing heavy: plugins declare their file
types at discovery time, and discovery must stay fast enough for `m3fm plugins list`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DICOM_SUFFIXES", "DISPLAY_IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "is_display_image"]

DISPLAY_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""Pictures already rendered for viewing (usually 8-bit and windowed; PNG and TIFF may hold 16-bit
or floating-point grey levels); read with PIL, one picture per file."""

DICOM_SUFFIXES = (".dcm",)
"""DICOM files; a folder of them is read as one series (a volume)."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")
"""NIfTI volumes."""


def is_display_image(name: str | Path) -> bool:
    """Whether a file name or path is a display picture (PNG/JPEG/TIFF), not a DICOM or NIfTI scan.

    Display pictures carry intensities a viewer already windowed, so modalities with physical
    units (CT's Hounsfield units) must scale them differently from raw scans.
    """
    return Path(name).name.lower().endswith(DISPLAY_IMAGE_SUFFIXES)
