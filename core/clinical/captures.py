"""Heatmap overlays as DICOM Secondary Capture images, filed with the study of their input, so a
PACS viewer shows them beside the slice they explain.

Only a single DICOM slice gets them: its preprocessed picture keeps the slice's rows and
columns (resized and padded to a square), so the capture can carry the slice's patient
orientation, read from its Image Orientation (Patient) or Patient Orientation. A volume or a
series is resampled and reoriented first, and a slice without either attribute has no known
orientation; they get PNGs only. The capture's pixels are the model's input size, not the
slice's, so it has no pixel spacing: it is a picture to look at, not to measure on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from m3fm.clinical import coding, output_path
from m3fm.clinical.identity import ModelIdentity

__all__ = ["patient_orientation", "write_secondary_captures"]

SERIES_NUMBER = 9902
"""Series of an input's captures: after its images and its SR (9901)."""
_AXES = (("L", "R"), ("P", "A"), ("H", "F"))
"""Patient-orientation letters of the +x, +y, +z patient axes and of their opposites."""


def patient_orientation(header: Dataset) -> tuple[str, str] | None:
    """(row, column) direction letters of a slice: the patient axis each of its rows and
    columns runs along most; None when the header says neither way."""
    given = header.get("PatientOrientation")
    if given and len(given) == 2 and all(given):
        return str(given[0]), str(given[1])
    cosines = header.get("ImageOrientationPatient")
    if not cosines or len(cosines) != 6:
        return None
    letters = []
    for vector in (cosines[:3], cosines[3:]):
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_AXES[axis][0 if vector[axis] > 0 else 1])
    return letters[0], letters[1]


def write_secondary_captures(pictures: Mapping[str, np.ndarray], headers: Sequence[Dataset],
                             identity: ModelIdentity, source: Path, out_dir: Path
                             ) -> list[Path]:
    """One Secondary Capture per overlay picture (H, W, 3) in `pictures` (name → picture), as
    ``output_path(out_dir, source, ".<name>.sc.dcm")``, all in one new series of the source
    slice's study; [] unless `headers` is one slice with a known orientation."""
    if len(headers) != 1 or (orientation := patient_orientation(headers[0])) is None:
        return []
    header = headers[0]
    series = generate_uid()
    written = []
    for number, (name, picture) in enumerate(pictures.items(), start=1):
        capture = hd.sc.SCImage.from_ref_dataset(
            header, np.ascontiguousarray(picture), "RGB", 8, "PATIENT", series, SERIES_NUMBER,
            generate_uid(), number, "m3fm", patient_orientation=orientation,
            transfer_syntax_uid="1.2.840.10008.1.2.1")
        capture.SeriesDescription = "m3fm saliency (AI-generated, unverified)"
        capture.ImageComments = f"{name} saliency map. {coding.ai_statement(identity)}"[:10240]
        capture.BurnedInAnnotation = "NO"
        if "Laterality" in header:  # as the slice states it (empty: unknown), for validators
            capture.Laterality = header.Laterality
        path = output_path(out_dir, source, f".{name}.sc.dcm")
        partial = path.with_name(f".{path.name}.partial")
        try:
            capture.save_as(partial, enforce_file_format=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    return written
