"""Clinical efficacy of generated reports: do they state the findings of the reference?

Overlap scores reward a report for its template; this score rewards it for its findings, the
role CheXbert-based scores play for MIMIC-CXR.  Each report is read by its language plugin's
finding extractor (:attr:`LanguageSpec.extract_findings`), and findings are compared case by
case:

* A finding's **key** is (label, present).  "Effusion present" and "effusion absent" are
  different keys, so a report that denies what its reference asserts earns a false positive
  and a false negative, never a match.  Side and lobe are ignored.
* Its **located key** is (label, present, side, lobe): the place must agree too, and a
  finding without a place only matches another without one.
* The **positive** scores count only findings stated present.  Templated negations ("no
  enlarged lymph nodes were seen in the mediastinum" closes almost every COV-CTR report) let a
  report that copies the template match almost every reference; without them, a report is
  scored on the abnormalities it names.
* The keys of one report form a set: a finding stated twice counts once.  Every key seen in
  any report is one column of a cases × keys indicator matrix, and scikit-learn's
  ``precision_recall_fscore_support(average="micro")`` counts, over all cells, true positives
  (key in both reports), false positives (only in the generated one) and false negatives (only
  in the reference).

Scores, on a 0–1 scale:

* ``CE-P``, ``CE-R``, ``CE-F1``: micro precision, recall and F1 of keys;
* ``CE-P-located``, ``CE-R-located``, ``CE-F1-located``: the same for located keys;
* ``CE-P-positive``, ``CE-R-positive``, ``CE-F1-positive``: keys of present findings only;
* ``CE-F1/<label>``: micro F1 over the keys of one label (present and absent), for every label
  found in any report.

A ratio with nothing to count (no finding in any generated report, for precision) is 0: there
is nothing to reward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from m3fm.metrics import check_pairs
from m3fm.registry import Finding, LanguageSpec, NotAvailableError, get_registry

CLINICAL_METRIC_NAMES = (
    "CE-P",
    "CE-R",
    "CE-F1",
    "CE-P-located",
    "CE-R-located",
    "CE-F1-located",
    "CE-P-positive",
    "CE-R-positive",
    "CE-F1-positive",
)
"""Keys every result of :func:`clinical_scores` has, in the order tables show them; per-label
F1 scores (``CE-F1/<label>``) follow."""


def clinical_scores(
    hypotheses: Sequence[str], references: Sequence[str], language: LanguageSpec | str,
    reference_language: LanguageSpec | str | None = None,
) -> dict[str, float]:
    """Finding-level precision, recall and F1 of generated reports against one reference each.

    `language` (a spec or code) is the hypotheses' language, `reference_language` the
    references' (default: the same).  Findings are language-neutral, so a Chinese report can be
    held to an English reference, each read by its own language's extractor.  Raises
    ValueError when the two lengths differ or there is nothing to score, and
    NotAvailableError when a language has no extractor.
    """
    check_pairs(hypotheses, references)
    read_hypothesis = _extractor(language)
    read_reference = _extractor(language if reference_language is None else reference_language)
    generated = [read_hypothesis(text) for text in hypotheses]
    expected = [read_reference(text) for text in references]

    scores: dict[str, float] = {}
    variants = (
        ("", _key, _every),
        ("-located", _located_key, _every),
        ("-positive", _key, _present),
    )
    for suffix, key, keep in variants:
        precision, recall, f1 = _micro_scores(generated, expected, key, keep)
        scores |= {f"CE-P{suffix}": precision, f"CE-R{suffix}": recall, f"CE-F1{suffix}": f1}
    labels = {finding.label for findings in (*generated, *expected) for finding in findings}
    for label in sorted(labels):
        keep = functools.partial(_has_label, label=label)
        scores[f"CE-F1/{label}"] = _micro_scores(generated, expected, _key, keep)[2]
    return scores


def _extractor(language: LanguageSpec | str) -> Callable[[str], list[Finding]]:
    if isinstance(language, str):
        language = get_registry().language(language)
    if language.extract_findings is None:
        raise NotAvailableError(
            f"language {language.code!r} provides no finding extractor"
            " (LanguageSpec.extract_findings), so clinical-efficacy scores cannot be computed"
        )
    return language.extract_findings


def _every(finding: Finding) -> bool:
    return True


def _present(finding: Finding) -> bool:
    return finding.present


def _has_label(finding: Finding, label: str) -> bool:
    return finding.label == label


def _key(finding: Finding) -> Hashable:
    return finding.label, finding.present


def _located_key(finding: Finding) -> Hashable:
    return finding.label, finding.present, finding.side, finding.lobe


def _micro_scores(
    generated: list[list[Finding]],
    expected: list[list[Finding]],
    key: Callable[[Finding], Hashable],
    keep: Callable[[Finding], bool],
) -> tuple[float, float, float]:
    """Micro precision, recall and F1 of the keys of the findings that `keep` accepts."""

    def keys(findings: list[Finding]) -> set[Hashable]:
        return {key(finding) for finding in findings if keep(finding)}

    predicted = [keys(findings) for findings in generated]
    true = [keys(findings) for findings in expected]
    columns = {k: index for index, k in enumerate(set().union(*predicted, *true))}
    if not columns:
        return 0.0, 0.0, 0.0
    y_pred, y_true = (_indicator(sets, columns) for sets in (predicted, true))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0.0
    )
    return float(precision), float(recall), float(f1)


def _indicator(key_sets: list[set[Hashable]], columns: dict[Hashable, int]) -> np.ndarray:
    """Cases × keys matrix with a 1 where a case's report has the key."""
    matrix = np.zeros((len(key_sets), len(columns)), dtype=np.int8)
    for row, case_keys in enumerate(key_sets):
        matrix[row, [columns[k] for k in case_keys]] = 1
    return matrix
