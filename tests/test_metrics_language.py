"""Language-overlap scores of generated reports, and the most-frequent-report baseline."""

from __future__ import annotations

import math

import pytest

from m3fm.data import read_records
from m3fm.metrics.language import (
    METRIC_NAMES,
    most_frequent_report,
    most_frequent_report_baseline,
    report_scores,
)
from m3fm.registry import get_registry

BLEU_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
ENGLISH_REPORTS = [
    "The thorax is symmetrical. No enlarged lymph nodes are seen in the mediastinum.",
    "Patchy ground-glass opacity is seen in the lower lobe of the right lung.",
]
CHINESE_REPORTS = ["胸廓对称，纵隔内未见肿大淋巴结。", "右肺下叶见斑片状磨玻璃影，边缘模糊。"]


@pytest.fixture
def english():
    return get_registry().language("en")


@pytest.fixture
def chinese():
    return get_registry().language("zh")


def test_scores_come_in_table_order(english):
    assert tuple(report_scores(ENGLISH_REPORTS, ENGLISH_REPORTS, english)) == METRIC_NAMES


@pytest.mark.parametrize(("code", "reports"), [("en", ENGLISH_REPORTS), ("zh", CHINESE_REPORTS)])
def test_identical_reports_score_full_marks(code, reports):
    scores = report_scores(reports, reports, get_registry().language(code))
    for name in (*BLEU_NAMES, "ROUGE-L"):
        assert scores[name] == pytest.approx(100)
    assert scores["CIDEr-D"] > 0


@pytest.mark.parametrize(
    ("code", "hypotheses", "references"),
    [
        ("en", ["Heart size normal?", "Lungs clear?"], ["Bilateral effusion!", "Old fracture!"]),
        ("zh", ["心影增大？", "气胸？"], ["双肺纹理清晰！", "肋骨骨折！"]),
    ],
)
def test_disjoint_reports_score_zero(code, hypotheses, references):
    # Different final marks: the normal form ends every report with one, which would match.
    scores = report_scores(hypotheses, references, get_registry().language(code))
    assert scores == dict.fromkeys(METRIC_NAMES, 0.0)


def test_chinese_is_scored_per_character(chinese):
    # 10 tokens, one per character (the full stop is one); changing 右 to 左 costs one unigram
    # and the one bigram it starts, where a word-level score would lose the word 右肺.
    reference, hypothesis = "右肺下叶见磨玻璃影。", "左肺下叶见磨玻璃影。"
    scores = report_scores([hypothesis], [reference], chinese)
    assert scores["BLEU-1"] == pytest.approx(100 * 9 / 10)
    assert scores["BLEU-2"] == pytest.approx(100 * math.sqrt(9 / 10 * 8 / 9))
    assert scores["ROUGE-L"] == pytest.approx(100 * 9 / 10)


def test_texts_are_normalised_before_scoring(chinese):
    scores = report_scores(["右肺下叶 见磨玻璃影."], ["右肺下叶见磨玻璃影。"], chinese)
    assert scores["BLEU-4"] == pytest.approx(100)


def test_cider_d_rewards_the_right_report_only(english):
    # The shared full stop is in every reference, so its weight is 0 and nothing else matches.
    references = ["No pleural effusion.", "Cardiomegaly is present."]
    right = report_scores(references, references, english)["CIDEr-D"]
    wrong = report_scores(references[::-1], references, english)["CIDEr-D"]
    assert right > 0
    assert wrong == 0


def test_an_empty_generated_report_scores_zero(english):
    scores = report_scores(["", ""], ENGLISH_REPORTS, english)
    assert scores == dict.fromkeys(METRIC_NAMES, 0.0)


@pytest.mark.parametrize(
    ("hypotheses", "references", "message"),
    [
        (["No effusion."], ["No effusion.", "Clear lungs."], "1 generated reports but 2"),
        ([], [], "no reports to score"),
        (["No effusion.", "x"], ["No effusion.", "  "], "empty after normalisation"),
    ],
)
def test_bad_input_is_a_clear_error(english, hypotheses, references, message):
    with pytest.raises(ValueError, match=message):
        report_scores(hypotheses, references, english)


def test_most_frequent_report_counts_normal_forms_and_breaks_ties_by_first_seen(english):
    train = ["Heart normal.", "no effusion", "No effusion.", "Lungs clear.", "Lungs clear."]
    assert most_frequent_report(train, english) == "No effusion."
    with pytest.raises(ValueError, match="no training reports"):
        most_frequent_report([], english)


@pytest.mark.data
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # Issue 4: "about 61 BLEU-4 (Chinese, character level) and 48 (English) on val".
        ("zh", [67.85, 65.02, 62.84, 61.15, 75.68, 0.36]),
        ("en", [62.26, 56.78, 52.21, 48.26, 67.42, 0.29]),
    ],
)
def test_most_frequent_report_baseline_on_cov_ctr_val(data_root, code, expected):
    records = read_records(data_root / "cov-ctr")
    reports = {
        split: [r.report for r in records if r.split == split and r.language == code]
        for split in ("train", "val")
    }
    scores = most_frequent_report_baseline(
        reports["train"], reports["val"], get_registry().language(code)
    )
    assert list(scores.values()) == pytest.approx(expected, abs=0.5)
