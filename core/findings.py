"""Language-neutral mechanics of rule-based finding extraction from radiology reports.

A language plugin supplies what belongs to its language — the terms that name each finding,
its negation cues, how a sentence splits into clauses and how sides and lobes are written —
and :class:`FindingRules` applies them the same way in every language, so that the findings
of an English and a Chinese report of one image can be compared at all:

* Each sentence is split into clauses, and each clause is searched for finding terms.  A
  term inside a longer term of another finding is dropped: "patchy" in "patchy ground-glass
  opacity", "积液" in "心包积液" describe the longer finding, not one of their own.
* A term is negated when it lies in the scope of a negation cue (:class:`Negation`), or
  when it states absence by itself ("normal heart size", "心脏不大").
* A finding is placed at every location its clause names.  A finding stated present in a
  clause that names none is placed where the nearest earlier clause of its sentence names
  ("… was seen within it", "其内见…"), the way a reader resolves "it"; a negated one stays
  unplaced, as in "…, no pleural effusion", which denies it anywhere.
* :func:`merge_findings` drops repeats, and a finding the report also places more precisely.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from m3fm.registry import Finding

__all__ = [
    "UNLOCATED",
    "FindingRules",
    "Lobe",
    "Location",
    "Negation",
    "Side",
    "TermMatch",
    "merge_findings",
]

Side = Literal["left", "right", "both"]
"""The side of a finding: which lung (or both)."""
Lobe = Literal["upper", "middle", "lower"]
"""The lobe of a finding, by level (only the right lung has a middle lobe)."""
Location = tuple[Side | None, Lobe | None]
"""(side, lobe) of a finding; either may be None when the report does not say."""

UNLOCATED: Location = (None, None)
"""A place that is named but has no side or lobe (the mediastinum), or no place at all."""


@dataclass(frozen=True)
class Negation:
    """A language's negation cues, and the clause spans they negate.

    `before` cues negate what follows them, up to the end of the clause or the next
    `terminators` match ("no … , but …").  `after` cues negate what precedes them, back to
    the start of the clause or the previous terminator ("… is not seen").  `pseudo` matches
    look like cues but negate nothing ("no change", "不除外"); cues inside them are ignored.
    """

    before: re.Pattern[str]
    after: re.Pattern[str]
    pseudo: re.Pattern[str] | None = None
    terminators: re.Pattern[str] | None = None

    def scopes(self, clause: str) -> list[tuple[int, int]]:
        """Character spans of `clause` that its negation cues cover."""
        masked = [m.span() for m in self.pseudo.finditer(clause)] if self.pseudo else []
        stops = [m.span() for m in self.terminators.finditer(clause)] if self.terminators else []

        def live(cue: re.Match[str]) -> bool:
            return not any(cue.start() < end and start < cue.end() for start, end in masked)

        spans = []
        for cue in filter(live, self.before.finditer(clause)):
            end = min((start for start, _ in stops if start >= cue.end()), default=len(clause))
            spans.append((cue.start(), end))
        for cue in filter(live, self.after.finditer(clause)):
            start = max((end for _, end in stops if end <= cue.start()), default=0)
            spans.append((start, cue.end()))
        return spans

    def negates(self, clause: str, start: int, end: int) -> bool:
        """Whether the text `clause[start:end]` overlaps the scope of a cue."""
        return any(start < stop and begin < end for begin, stop in self.scopes(clause))


@dataclass(frozen=True)
class TermMatch:
    """A finding term found in a clause; `present` is False for terms that state absence."""

    label: str
    start: int
    end: int
    present: bool = True


@dataclass(frozen=True)
class FindingRules:
    """Everything language-specific a finding extractor needs; calling it extracts findings.

    `terms` maps a label id to a regular expression of the phrases naming the finding;
    `absent_terms` to phrases that state the finding is absent ("normal heart size").
    `locate` returns the locations a clause names — :data:`UNLOCATED` for a named place
    without side or lobe, so that the clause does not borrow a lung's location — or an empty
    list when it names none.  The report is expected in its language's normal form.
    """

    terms: Mapping[str, str]
    negation: Negation
    split_sentences: Callable[[str], list[str]]
    split_clauses: Callable[[str], list[str]]
    locate: Callable[[str], list[Location]]
    absent_terms: Mapping[str, str] = field(default_factory=dict)
    flags: int = 0
    _patterns: tuple[tuple[str, bool, re.Pattern[str]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        patterns = [(label, True, re.compile(p, self.flags)) for label, p in self.terms.items()]
        patterns += [
            (label, False, re.compile(p, self.flags)) for label, p in self.absent_terms.items()
        ]
        object.__setattr__(self, "_patterns", tuple(patterns))

    def find_terms(self, clause: str) -> list[TermMatch]:
        """Finding terms in `clause`, without those nested in a longer term, in text order."""
        found = [
            TermMatch(label, match.start(), match.end(), present)
            for label, present, pattern in self._patterns
            for match in pattern.finditer(clause)
            if match.end() > match.start()
        ]
        kept = [term for term in found if not any(_nests(term, other) for other in found)]
        return sorted(kept, key=lambda term: (term.start, term.end))

    def __call__(self, report: str) -> list[Finding]:
        """The findings a report in normal form states or negates, merged."""
        findings = []
        for sentence in self.split_sentences(report):
            borrowed: list[Location] = []
            for clause in self.split_clauses(sentence):
                named = self.locate(clause)
                borrowed = named or borrowed
                for term in self.find_terms(clause):
                    present = term.present and not self.negation.negates(
                        clause, term.start, term.end
                    )
                    findings += [
                        Finding(label=term.label, present=present, side=side, lobe=lobe)
                        for side, lobe in named or (present and borrowed) or [UNLOCATED]
                    ]
        return merge_findings(findings)


def _nests(inner: TermMatch, outer: TermMatch) -> bool:
    """Whether `inner` lies within `outer` and is strictly shorter."""
    return (
        outer.start <= inner.start
        and inner.end <= outer.end
        and outer.end - outer.start > inner.end - inner.start
    )


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Drop repeats, and findings the same list states more precisely, keeping first-seen order.

    "Nodule" goes when "nodule, right upper lobe" is also there, as does "nodule, right
    lung"; "nodule, both lungs" and "nodule, right upper lobe" both stay, as does a finding
    stated present in one place and negated in another.
    """
    unique = list(dict.fromkeys(findings))
    return [finding for finding in unique if not any(_refines(o, finding) for o in unique)]


def _refines(precise: Finding, vague: Finding) -> bool:
    return (
        precise != vague
        and precise.label == vague.label
        and precise.present == vague.present
        and vague.side in (None, precise.side)
        and vague.lobe in (None, precise.lobe)
    )
