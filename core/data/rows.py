"""Row-level validation shared by every reader.

A data set published by others always has a few bad rows.  Readers turn each row into a
:class:`Record` inside :meth:`RowCollector.add`; anything wrong with the row raises
:class:`RowError` (or fails the Record's own pydantic validation) and becomes a
:class:`RowProblem` naming the row, so the rest of the data set still loads and nothing is
dropped without a trace.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from m3fm.registry import ReadResult, Record, RowProblem


class RowError(ValueError):
    """What is wrong with one row; the reader reports it and goes on with the next row."""


class RowCollector:
    """Accumulates the records and the problems of one read."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.problems: list[RowProblem] = []

    def add(self, source: str, build: Callable[..., Record], *args: Any) -> None:
        """Keep ``build(*args)`` as a record, or report why the row at `source` was left out."""
        try:
            self.records.append(build(*args))
        except RowError as exc:
            self.reject(source, str(exc))
        except ValidationError as exc:
            self.reject(source, _describe(exc))

    def reject(self, source: str, message: str) -> None:
        """Report a row that cannot become a record."""
        self.problems.append(RowProblem(source=source, message=message))

    def keep_first(self, key: Callable[[Record], Hashable], what: str) -> None:
        """Leave out (and report) every record whose `key` an earlier record already had.

        `what` names the key in the message, e.g. ``"id in this split"``.
        """
        first: dict[Hashable, Record] = {}
        kept = []
        for record in self.records:
            earlier = first.setdefault(key(record), record)
            if earlier is record:
                kept.append(record)
            else:
                self.reject(record.source, f"duplicate {what} (first at {earlier.source})")
        self.records = kept

    def result(self) -> ReadResult:
        """The read's outcome; ids are made unique per split, as :class:`Record` promises."""
        self.keep_first(lambda record: (record.split, record.id), "id in this split")
        return ReadResult(records=tuple(self.records), problems=tuple(self.problems))


def _describe(error: ValidationError) -> str:
    """One line per invalid Record field, e.g. ``language: String should match pattern ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']} (got {item['input']!r:.80})"
        for item in error.errors()
    )


def text_field(row: Mapping[str, Any], name: str) -> str:
    """A required, non-blank text field, returned as published (not stripped)."""
    if name not in row or row[name] is None:
        raise RowError(f"missing field {name!r}")
    value = row[name]
    if not isinstance(value, str):
        raise RowError(f"field {name!r} must be text, got {value!r}")
    if not value.strip():
        raise RowError(f"empty field {name!r}")
    return value


def identifier_field(row: Mapping[str, Any], name: str = "id") -> str:
    """A required identifier; integers are accepted because some exporters write ids as numbers."""
    value = optional_text(row, name)
    if value is None:
        raise RowError(f"missing or empty field {name!r}")
    return value


def optional_text(row: Mapping[str, Any], name: str) -> str | None:
    """An optional text (or integer) field, stripped; missing or blank means None."""
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"field {name!r} must be text, got {value!r}")
    return value.strip() or None


def binary_value(value: Any, name: str) -> int:
    """A 0/1 label given as a JSON number or as text (CSV)."""
    if isinstance(value, str):
        value = value.strip()
        if value in ("0", "1"):
            return int(value)
    elif isinstance(value, int) and value in (0, 1):
        return int(value)
    raise RowError(f"{name} must be 0 or 1, got {value!r}")


def row_mapping(header: list[str], values: list[str]) -> dict[str, str]:
    """A CSV row as a column → value mapping; a wrong number of values is the row's problem."""
    if len(values) != len(header):
        raise RowError(f"expected {len(header)} values, found {len(values)}")
    return dict(zip(header, values, strict=True))


def image_in_folder(images: Path, name: str) -> Path:
    """The existing file `name` directly inside `images` (a data set's ``images/`` folder)."""
    if Path(name).name != name or name in (".", ".."):
        raise RowError(f"image {name!r} must be a file name inside {images.name}/")
    path = images / name
    if not path.is_file():
        raise RowError(f"image file not found: {images.name}/{name}")
    return path
