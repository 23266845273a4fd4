"""Clinical-efficacy scores: finding-level precision, recall and F1 of generated reports."""

from __future__ import annotations

import pytest

from m3fm.metrics.clinical import CLINICAL_METRIC_NAMES, clinical_scores
from m3fm.registry import LanguageSpec, NotAvailableError, get_registry

REFERENCES = [
    "Consolidation in the right lower lobe. No pleural effusion.",
    "Small left pleural effusion. No pneumothorax.",
]


def test_identical_reports_score_one():
    scores = clinical_scores(REFERENCES, REFERENCES, "en")
    assert list(scores)[: len(CLINICAL_METRIC_NAMES)] == list(CLINICAL_METRIC_NAMES)
    assert set(scores.values()) == {1.0}
    assert {"CE-F1/consolidation", "CE-F1/effusion", "CE-F1/pneumothorax"} <= set(scores)


def test_a_report_negating_what_the_reference_asserts_scores_zero():
    references = ["Consolidation in the right lower lobe. No pleural effusion.", "Small effusion."]
    negated = ["No consolidation. A pleural effusion is present.", "No pleural effusion."]
    scores = clinical_scores(negated, references, "en")
    assert scores["CE-F1"] == scores["CE-F1-located"] == scores["CE-F1-positive"] == 0.0
    assert scores["CE-F1/effusion"] == scores["CE-F1/consolidation"] == 0.0


def test_counts_are_micro_over_all_findings():
    # Reference: 3 findings; generated: 2 of them (one in the wrong lobe) and 1 extra.
    reference = "右肺下叶见实变影，未见胸腔积液，纵隔内未见肿大淋巴结。"
    generated = "右肺上叶见实变影，未见胸腔积液，双肺见磨玻璃影。"
    scores = clinical_scores([generated], [reference], get_registry().language("zh"))
    assert scores["CE-P"] == pytest.approx(2 / 3) and scores["CE-R"] == pytest.approx(2 / 3)
    assert scores["CE-F1-located"] == pytest.approx(1 / 3)  # the misplaced consolidation misses
    assert scores["CE-P-positive"] == pytest.approx(1 / 2) and scores["CE-R-positive"] == 1.0
    assert scores["CE-F1/ground_glass_opacity"] == 0.0 and scores["CE-F1/effusion"] == 1.0


def test_reports_without_findings_score_zero():
    scores = clinical_scores(["The thorax is symmetrical."], ["The thorax is symmetrical."], "en")
    assert set(scores) == set(CLINICAL_METRIC_NAMES) and set(scores.values()) == {0.0}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 generated reports but 1 references"):
        clinical_scores(REFERENCES, REFERENCES[:1], "en")
    with pytest.raises(ValueError, match="no reports"):
        clinical_scores([], [], "en")


def test_a_language_without_an_extractor_is_refused_by_name():
    """A plugin written for API 1.0 has no extractor: still a valid spec, but not scorable."""
    spanish = LanguageSpec(
        code="es", name="Spanish", pivot="en", normalize=str.strip,
        split_sentences=lambda text: [text], tokenize_words=str.split, join_words=" ".join,
        metric_tokenizer="13a", finding_names={"effusion": "derrame pleural"},
        positive_templates=("Se observa {finding}.",),
        negative_templates=("No se observa {finding}.",),
    )
    assert spanish.extract_findings is None
    with pytest.raises(NotAvailableError, match="'es' provides no finding extractor"):
        clinical_scores(["derrame pleural"], ["derrame pleural"], spanish)


def test_findings_are_compared_across_languages():
    """The same findings stated in Chinese and in English agree; a denial does not."""
    chinese = ["右肺下叶可见磨玻璃影。", "双肺未见异常密度影。"]
    english = ["Ground glass opacity in the right lower lobe.", "Ground glass opacity."]
    scores = clinical_scores(chinese[:1], english[:1], "zh", "en")
    assert scores["CE-F1"] == 1.0 and scores["CE-F1-located"] == 1.0
    assert clinical_scores(chinese[1:], english[1:], "zh", "en")["CE-F1-positive"] == 0.0
