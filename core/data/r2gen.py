"""R2Gen-style report corpora (IU X-ray, MIMIC-CXR): ``annotation.json`` of English CXR reports.

Such a corpus is usually shared without its images, and the report generator is trained on
text alone, so listed images that are absent are normal: the record is then text-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3fm.registry import DatasetSpec, ReadResult, Record

from .rows import RowCollector, RowError, identifier_field, text_field
from .sources import detector, first_entry, locate, split_lists

NAME = "r2gen"
ANNOTATION = "annotation.json"


@detector
def detect(path: Path) -> bool:
    """An annotation file whose entries list their images (R2Gen) and carry no COV-CTR fields."""
    entry = first_entry(locate(path, [ANNOTATION], {".json"}))
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("image_path"), list)
        and "report" in entry
        and "label1" not in entry
    )


def read(path: Path) -> ReadResult:
    """Every split of an R2Gen annotation file, as English chest X-ray reports."""
    annotation = locate(path, [ANNOTATION], {".json"})
    images_folder = (annotation.parent / "images").resolve()
    images = images_folder if images_folder.is_dir() else None
    collector = RowCollector()
    for split, index, entry in split_lists(annotation):
        source = f"{annotation.name}:{split}[{index}]"
        collector.add(source, _record, entry, split, images, source)
    return collector.result()


def _record(entry: Any, split: str, images: Path | None, source: str) -> Record:
    if not isinstance(entry, dict):
        raise RowError(f"entry must be an object, got {type(entry).__name__}")
    names = entry.get("image_path")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RowError(f"image_path must be a list of file names, got {names!r:.80}")
    return Record(
        id=identifier_field(entry),
        dataset=NAME,
        split=split,
        modality="cxr",
        image=_first_present(images, names),
        language="en",
        report=text_field(entry, "report"),
        source=source,
    )


def _first_present(images: Path | None, names: list[str]) -> Path | None:
    """The first listed image that exists under ``images/`` (names may hold sub-folders)."""
    if images is None:
        return None
    for name in names:
        path = (images / name).resolve()
        if path.is_relative_to(images) and path.is_file():
            return path
    return None


SPEC = DatasetSpec(
    name=NAME,
    description="R2Gen-style annotation.json of English chest X-ray reports (IU X-ray, MIMIC-CXR)",
    detect=detect,
    read=read,
)
