"""Evaluation metrics for generated reports: language overlap scores and clinical efficacy.

Overlap scores (BLEU, ROUGE-L, CIDEr-D) reward templated wording as much as correct findings,
so evaluation reports them beside finding-level scores, never alone.
"""

from collections.abc import Sequence


def check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Refuse to score unless each generated report has exactly one reference, and some exist."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} generated reports but {len(references)} references;"
            " each generated report needs exactly one reference"
        )
    if not references:
        raise ValueError("no reports to score: hypotheses and references are empty")
