"""A generic manifest for users' own data: ``manifest.csv`` or ``manifest.jsonl``.

One row per image–report pair, report alone, or labelled image alone:

- ``language`` (required) and ``report`` (required column; may be empty when there is an image);
- ``image``: path relative to the manifest's folder, or absolute; empty for a text-only row;
- ``modality``: required when there is an image;
- ``labels``: ``covid19=1;effusion=0`` in CSV, an object ``{"covid19": 1}`` in JSONL;
- ``split`` (default ``train``), ``id`` (default ``line-<line number>``), ``patient``, ``group``.

Any other column is kept in ``meta``.  Problems name the manifest's own line numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3fm.registry import DatasetSpec, ReadResult, Record

from .rows import RowCollector, RowError, binary_value, optional_text, row_mapping
from .sources import csv_header, csv_rows, detector, locate, text_lines

NAME = "manifest"
FILE_NAMES = ("manifest.csv", "manifest.jsonl")
SUFFIXES = {".csv", ".jsonl"}
REQUIRED = ("language", "report")
COLUMNS = (*REQUIRED, "image", "modality", "labels", "split", "id", "patient", "group")


@detector
def detect(path: Path) -> bool:
    """A manifest file (or a folder holding one) that has the required columns."""
    manifest = locate(path, FILE_NAMES, SUFFIXES)
    if manifest.suffix.lower() == ".csv":
        return set(csv_header(manifest)).issuperset(REQUIRED)
    _, first = next(text_lines(manifest), (0, ""))
    row = json.loads(first)
    return isinstance(row, dict) and all(name in row for name in REQUIRED)


def read(path: Path) -> ReadResult:
    """Every row of a manifest; a bad row, including a JSON syntax error, is that row's problem."""
    manifest = locate(path, FILE_NAMES, SUFFIXES)
    collector = RowCollector()
    if manifest.suffix.lower() == ".csv":
        header, rows = csv_rows(manifest, REQUIRED)
        for line, values in rows:
            source = f"{manifest.name}:{line}"
            collector.add(source, _csv_record, header, values, line, manifest.parent, source)
    else:
        for line, text in text_lines(manifest):
            source = f"{manifest.name}:{line}"
            collector.add(source, _jsonl_record, text, line, manifest.parent, source)
    return collector.result()


def _csv_record(
    header: list[str], values: list[str], line: int, folder: Path, source: str
) -> Record:
    return _record(row_mapping(header, values), line, folder, source)


def _jsonl_record(text: str, line: int, folder: Path, source: str) -> Record:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"invalid JSON at column {exc.colno}: {exc.msg}") from exc
    except RecursionError as exc:
        raise RowError("JSON nested too deeply to read") from exc
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    return _record(row, line, folder, source)


def _record(row: Mapping[str, Any], line: int, folder: Path, source: str) -> Record:
    if "report" not in row:
        raise RowError("missing field 'report'")
    report = row["report"]
    if not isinstance(report, str):
        raise RowError(f"field 'report' must be text, got {report!r}")
    language = optional_text(row, "language")
    if language is None:
        raise RowError("missing or empty field 'language'")
    image = _image(folder, optional_text(row, "image"))
    modality = optional_text(row, "modality")
    if image is None and not report.strip():
        raise RowError("row has neither an image nor a report")
    if image is not None and modality is None:
        raise RowError("a row with an image needs a modality")
    return Record(
        id=optional_text(row, "id") or f"line-{line}",
        dataset=NAME,
        split=optional_text(row, "split") or "train",
        modality=modality,
        image=image,
        language=language,
        report=report,
        labels=_labels(row.get("labels")),
        group=optional_text(row, "group"),
        patient=optional_text(row, "patient"),
        source=source,
        meta={name: _as_text(value) for name, value in row.items() if name not in COLUMNS},
    )


def _image(folder: Path, name: str | None) -> Path | None:
    """The image path made absolute against the manifest's folder; it must exist."""
    if name is None:
        return None
    path = folder / name
    try:
        found = path.exists()
    except (OSError, ValueError) as exc:  # e.g. a NUL byte or an over-long name
        raise RowError(f"unusable image path {name!r}: {exc}") from exc
    if not found:
        raise RowError(f"image not found: {name}")
    return path


def _labels(value: Any) -> dict[str, int]:
    """Labels from CSV text ``covid19=1;effusion=0`` or a JSON object ``{"covid19": 1}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {name: binary_value(state, f"label {name!r}") for name, state in value.items()}
    if not isinstance(value, str):
        raise RowError(f"labels must be an object or 'name=0|1;...' text, got {value!r}")
    labels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(";"))):
        name, equals, state = (part.strip() for part in item.partition("="))
        if not equals:
            raise RowError(f"label {item!r} must look like name=0 or name=1")
        if name in labels:
            raise RowError(f"label {name!r} is given twice")
        labels[name] = binary_value(state, f"label {name!r}")
    return labels


def _as_text(value: Any) -> str:
    """An extra column's value as text: strings unchanged, other JSON values as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


SPEC = DatasetSpec(
    name=NAME,
    description="Your own data: manifest.csv or manifest.jsonl of images, reports and labels",
    detect=detect,
    read=read,
)
