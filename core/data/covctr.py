"""COV-CTR: CT slices with an English and a Chinese report each (``annotation.json``, ``images/``).

Each image appears once per language; both records share the image's file name as their
``group``, which is what makes them the English–Chinese parallel pairs the pivot loss needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3fm.registry import DatasetSpec, ReadResult, Record

from .rows import (
    RowCollector,
    RowError,
    binary_value,
    identifier_field,
    image_in_folder,
    text_field,
)
from .sources import detector, first_entry, locate, split_lists

NAME = "cov-ctr"
ANNOTATION = "annotation.json"
LANGUAGES = {"english": "en", "chinese": "zh"}


@detector
def detect(path: Path) -> bool:
    """An annotation file whose entries carry COV-CTR's ``label1`` language and ``COVID`` label."""
    entry = first_entry(locate(path, [ANNOTATION], {".json"}))
    return isinstance(entry, dict) and "label1" in entry and "COVID" in entry


def read(path: Path) -> ReadResult:
    """Every split of a COV-CTR data set; bad entries and repeated reports become problems."""
    annotation = locate(path, [ANNOTATION], {".json"})
    images = annotation.parent / "images"
    collector = RowCollector()
    for split, index, entry in split_lists(annotation):
        source = f"{annotation.name}:{split}[{index}]"
        collector.add(source, _record, entry, split, images, source)
    collector.keep_first(
        lambda record: (record.group, record.language), "report in this language for this image"
    )
    return collector.result()


def _record(entry: Any, split: str, images: Path, source: str) -> Record:
    if not isinstance(entry, dict):
        raise RowError(f"entry must be an object, got {type(entry).__name__}")
    if entry.get("split", split) != split:
        raise RowError(f"entry says split {entry['split']!r} but is listed under {split!r}")
    label = text_field(entry, "label1").strip().lower()
    if label not in LANGUAGES:
        raise RowError(f"label1 must be one of {', '.join(LANGUAGES)}, got {entry['label1']!r}")
    if "COVID" not in entry:
        raise RowError("missing field 'COVID'")
    language = LANGUAGES[label]
    image_name = text_field(entry, "image_path").strip()
    return Record(
        # The published id names the image, so both languages share it; the record id must not.
        id=f"{identifier_field(entry)}:{language}",
        dataset=NAME,
        split=split,
        modality="ct",
        image=image_in_folder(images, image_name),
        language=language,
        report=text_field(entry, "report"),
        labels={"covid19": binary_value(entry["COVID"], "COVID")},
        group=image_name,
        source=source,
    )


SPEC = DatasetSpec(
    name=NAME,
    description="COV-CTR CT slices with English and Chinese reports (annotation.json + images/)",
    detect=detect,
    read=read,
)
