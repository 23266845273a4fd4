"""Read the sentence pairs a language plugin ships for its pivot (`parallel_sentences`).

The format is meant for people who write translations by hand: a UTF-8 text file with one
pair per line, the pivot-language sentence and its translation separated by a tab.  Blank
lines and lines starting with ``#`` (a note on who translated what, and how) are skipped.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

from m3fm.registry import DataFormatError

__all__ = ["read_sentence_pairs"]


def read_sentence_pairs(path: str | Path | Traversable) -> tuple[tuple[str, str], ...]:
    """The (pivot sentence, translation) pairs of a tab-separated file.

    Accepts a path (`str` or `Path`) or an ``importlib.resources.files(...)`` entry, so a plugin
    can read a file it ships as package data.  A line without exactly one tab, or with an empty
    side, raises :class:`~m3fm.registry.DataFormatError` naming the file and line.
    """
    if isinstance(path, str):
        path = Path(path)
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise DataFormatError(
                f"{path}, line {number}: expected 'sentence<TAB>translation', got {line!r}"
            )
        pairs.append((fields[0], fields[1]))
    return tuple(pairs)
