"""Reading data sets into typed records, whatever format they were published in.

Each format is a :class:`~m3fm.registry.DatasetSpec` found through the plugin registry, so
:func:`read_dataset` reads a format a third-party plugin adds exactly like a built-in one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from m3fm.registry import DataFormatError, ReadResult, Record, get_registry

log = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test")


def read_dataset(path: str | Path, format: str | None = None) -> ReadResult:
    """Read the data set at `path` in the named `format`, or in the one format that detects it.

    Raises DataFormatError when the path matches no format or several (naming them), or when
    the data set as a whole is unreadable; UnknownNameError for a format nobody provides.
    """
    path = Path(path)
    registry = get_registry()
    if format is not None:
        return registry.dataset(format).read(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    tried = registry.names("dataset")
    matched = [
        name
        for name in tried
        if any(provided.spec.detect(path) for provided in registry.providers("dataset", name))
    ]
    if len(matched) != 1:
        found = f"it matches {', '.join(matched)}" if matched else "none matches"
        raise DataFormatError(
            f"{path}: cannot tell the data set format ({found}; tried"
            f" {', '.join(tried) or 'none'}); pass the format by name"
        )
    return registry.dataset(matched[0]).read(path)


def read_records(path: str | Path, format: str | None = None) -> list[Record]:
    """The usable records of a data set; every skipped row is logged as a warning with its place.

    For commands that consume data (training, evaluation) rather than inspect it.
    """
    result = read_dataset(path, format)
    for problem in result.problems:
        log.warning("skipped %s: %s", problem.source, problem.message)
    return list(result.records)


def read_sources(sources: Iterable[Any], data_dir: Path) -> list[Record]:
    """Records of a recipe's data sources (``path`` relative to `data_dir`, ``format``)."""
    return [record for source in sources
            for record in read_records(data_dir / source.path, source.format)]


def summarize(result: ReadResult) -> list[dict[str, Any]]:
    """Record counts per split × modality × language, with how many have an image or labels.

    Rows come sorted train, val, test, then other splits; a missing modality is None.
    """
    records: Counter[tuple[str, str | None, str]] = Counter()
    with_image: Counter[tuple[str, str | None, str]] = Counter()
    labelled: Counter[tuple[str, str | None, str]] = Counter()
    for record in result.records:
        key = (record.split, record.modality, record.language)
        records[key] += 1
        with_image[key] += record.image is not None
        labelled[key] += bool(record.labels)
    return [
        {
            "split": split,
            "modality": modality,
            "language": language,
            "records": count,
            "with_image": with_image[split, modality, language],
            "labelled": labelled[split, modality, language],
        }
        for (split, modality, language), count in sorted(records.items(), key=_summary_order)
    ]


def _summary_order(item: tuple[tuple[str, str | None, str], int]) -> tuple[Any, ...]:
    (split, modality, language), _ = item
    rank = SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)
    return rank, split, modality or "", language


__all__ = ["read_dataset", "read_records", "summarize"]
