"""Spanish versions of COV-CTR's English reports, assembled from hand-translated clauses.

COV-CTR reports are chains of short clauses ("the thorax was symmetrical, the mediastinal
heart shadow was centered, and no enlarged lymph nodes were seen in the mediastinum").  Each
clause is looked up in the plugin's clause pairs (``data/clauses.tsv``); a report is
translated only when every one of its clauses is there, so no Spanish text is guessed.
"""

from __future__ import annotations

import re

from m3fm.registry import get_registry

from . import language

# A clause boundary and the Spanish that replaces it: "," and ";" (an "and" after them is
# dropped or becomes "y"), and "and" before a new clause's subject.
_BOUNDARY = re.compile(
    r"(,\s*(?:and\s+)?|;\s*(?:and\s+)?|\s+and\s+(?=(?:no|the|a|an|there|small|large|patchy|"
    r"multiple|ground)\b))"
)


def _spanish_boundary(english: str) -> str:
    mark = english.strip()
    if mark.startswith(";"):
        return "; "
    return " y " if mark.endswith("and") else ", "


class ClauseTranslator:
    """Translate English report text clause by clause with the hand-written table."""

    def __init__(self) -> None:
        self.table = {english.lower(): spanish
                      for english, spanish in language.SPEC.parallel_sentences}
        self.english = get_registry().language("en")

    def translate(self, report: str) -> str | None:
        """The Spanish report, or None when a clause is not in the table."""
        sentences = []
        for sentence in self.english.split_sentences(self.english.normalize(report)):
            parts = _BOUNDARY.split(sentence.rstrip("."))
            words = []
            for index, part in enumerate(parts):
                if index % 2:
                    words.append(_spanish_boundary(part))
                    continue
                clause = self.table.get(part.strip().lower())
                if clause is None:
                    return None
                words.append(clause)
            text = "".join(words)
            sentences.append(text[:1].upper() + text[1:] + ".")
        return " ".join(sentences) or None
