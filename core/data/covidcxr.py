"""The COVID-19 image data collection (covid-chestxray-dataset): ``metadata.csv`` + ``images/``.

Choices this reader makes, because the publisher's file leaves them open:

- **Reports.** ``clinical_notes`` is the report.  Rows with an empty note are kept with
  ``report=""``: diagnosis needs the image and the finding, not a report.
- **Labels.** ``covid19`` is 1 when the finding names COVID-19 anywhere, e.g. ``COVID-19``,
  ``COVID-19, ARDS`` (this snapshot) or ``Pneumonia/Viral/COVID-19`` (later releases), else 0.
- **Splits.** The file has no split column, so patients are split deterministically: a
  patient goes to ``val`` when the SHA-256 of its ``patientid`` falls in the lowest
  :data:`VAL_FRACTION` of the hash range, else to ``train``.  Every image of a patient lands
  in the same split, and the split is the same on every machine and Python run (unlike the
  salted built-in ``hash``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from m3fm.registry import DatasetSpec, ReadResult, Record

from .rows import RowCollector, RowError, image_in_folder, row_mapping, text_field
from .sources import csv_header, csv_rows, detector, locate

NAME = "covid-cxr"
METADATA = "metadata.csv"
COLUMNS = ("patientid", "finding", "view", "modality", "filename", "clinical_notes", "license")
MODALITIES = {"X-ray": "cxr", "CT": "ct"}
VAL_FRACTION = 0.2


@detector
def detect(path: Path) -> bool:
    """A metadata.csv whose header has the collection's columns."""
    metadata = locate(path, [METADATA], {".csv"})
    return set(csv_header(metadata)).issuperset(COLUMNS)


def read(path: Path) -> ReadResult:
    """Every row of metadata.csv, split into train/val by patient."""
    metadata = locate(path, [METADATA], {".csv"})
    header, rows = csv_rows(metadata, COLUMNS)
    images = metadata.parent / "images"
    collector = RowCollector()
    for line, values in rows:
        source = f"{metadata.name}:{line}"
        collector.add(source, _record, header, values, images, source)
    return collector.result()


def _record(header: list[str], values: list[str], images: Path, source: str) -> Record:
    row = row_mapping(header, values)
    patient = text_field(row, "patientid").strip()
    finding = text_field(row, "finding").strip()
    modality = MODALITIES.get(row["modality"].strip())
    if modality is None:
        raise RowError(f"modality must be one of {', '.join(MODALITIES)}, got {row['modality']!r}")
    filename = text_field(row, "filename").strip()
    return Record(
        id=filename,
        dataset=NAME,
        split=patient_split(patient),
        modality=modality,
        image=image_in_folder(images, filename),
        language="en",
        report=row["clinical_notes"],
        labels={"covid19": int(names_covid19(finding))},
        patient=patient,
        source=source,
        meta={"finding": finding, "view": row["view"].strip(), "license": row["license"].strip()},
    )


def names_covid19(finding: str) -> bool:
    """Whether a finding (``COVID-19, ARDS``, ``Pneumonia/Viral/COVID-19``) names COVID-19."""
    return any(part.strip().upper() == "COVID-19" for part in re.split(r"[,/;]", finding))


def patient_split(patient: str) -> str:
    """``val`` for a stable ~:data:`VAL_FRACTION` of patients, ``train`` for the others."""
    digest = hashlib.sha256(patient.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if position < VAL_FRACTION else "train"


SPEC = DatasetSpec(
    name=NAME,
    description="COVID-19 image data collection: metadata.csv of X-ray/CT images with findings",
    detect=detect,
    read=read,
)
