"""Spanish text rules: tokens, the normal form, sentences.

Normal form: single spaces, no space before ``, . ; : ! ? )``, none after ``( ¿ ¡``, list
numbering removed, and a final full stop.  Sentences end at ``. ! ?`` followed by a space.
"""

from __future__ import annotations

import re

from m3fm.text import collapse_whitespace, strip_list_markers, until_stable

# Numbers with a decimal part stay whole ("2,5"), then words, then any single mark.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|\w+|[^\w\s]")
_NO_SPACE_BEFORE = set(",.;:!?)%")
_NO_SPACE_AFTER = set("(¿¡")
_SENTENCE_GAP = re.compile(r"(?<=[.!?])\s+")


def tokenize_words(text: str) -> list[str]:
    """Words and punctuation marks as separate tokens."""
    return _TOKEN.findall(text)


def join_words(words: list[str]) -> str:
    """Inverse of :func:`tokenize_words` on normalised text."""
    text = ""
    for word in words:
        glued = not text or word in _NO_SPACE_BEFORE or text[-1] in _NO_SPACE_AFTER
        text += word if glued else f" {word}"
    return text


def normalize(report: str) -> str:
    """Clean a raw Spanish report into the normal form above; idempotent."""
    return until_stable(_normalize_pass, report)


def _normalize_pass(text: str) -> str:
    text = join_words(tokenize_words(collapse_whitespace(text)))
    text = strip_list_markers(text, boundaries=".;:", terminator=". ")
    if text and text[-1] not in ".!?":
        text += "."
    return text


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` and a space."""
    return [sentence for sentence in _SENTENCE_GAP.split(text) if sentence]
