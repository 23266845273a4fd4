"""English finding extraction, and the language-neutral mechanics it shares (m3fm.findings)."""

from __future__ import annotations

import json
import re

import pytest

from m3fm.findings import Negation, merge_findings
from m3fm.registry import Finding, get_registry


@pytest.fixture
def english():
    return get_registry().language("en")


def found(language, report: str) -> set[tuple]:
    return {(f.label, f.present, f.side, f.lobe) for f in language.extract_findings(report)}


# Sentences in the wording of COV-CTR (CT, translated) and IU X-ray (chest X-ray) reports.
CASES = [
    # negation scope: a comma and "but" end it
    (
        "No pleural effusion, but consolidation in the right lower lobe.",
        {("effusion", False, None, None), ("consolidation", True, "right", "lower")},
    ),
    # a list under one "no", closed by "or", even with a comma before "or" and a verb after it
    (
        "No pneumothorax, pleural effusion, or focal airspace consolidation.",
        {("pneumothorax", False, None, None), ("effusion", False, None, None),
         ("consolidation", False, None, None)},
    ),
    (
        "No focal consolidation, pneumothorax, or pleural effusion identified.",
        {("consolidation", False, None, None), ("pneumothorax", False, None, None),
         ("effusion", False, None, None)},
    ),
    # negation after the finding
    ("A pneumothorax is not seen.", {("pneumothorax", False, None, None)}),
    ("Negative for pneumonia.", {("pneumonia", False, None, None)}),
    ("Right upper lobe mass without cavitation.",
     {("mass", True, "right", "upper"), ("cavity", False, "right", "upper")}),
    # pseudo-negations negate nothing
    ("Pneumonia cannot be excluded.", {("pneumonia", True, None, None)}),
    ("No change in the left lower lobe nodule.", {("nodule", True, "left", "lower")}),
    # phrases that state absence by themselves
    ("The heart is normal in size.", {("cardiomegaly", False, None, None)}),
    ("Heart size and pulmonary vascularity appear within normal limits.",
     {("cardiomegaly", False, None, None)}),
    ("Mild cardiomegaly.", {("cardiomegaly", True, None, None)}),
    # "no enlarged lymph nodes": the mediastinum is a place without side, so no lobe is lent
    (
        "The texture of both lungs was clear, no enlarged lymph nodes were seen in the "
        "mediastinum.",
        {("lymphadenopathy", False, None, None)},
    ),
    # modifiers belong to their finding: "patchy" here is not a patchy opacity
    (
        "Patchy ground glass shadow and patchy solid shadow were seen in the upper lobe of "
        "the right lung.",
        {("ground_glass_opacity", True, "right", "upper"),
         ("consolidation", True, "right", "upper")},
    ),
    # a list of places after a comma; the lingula is part of the left upper lobe
    (
        "Small lamellar shadows were seen in the middle lobe of the right lung, the lingual "
        "segment of the upper lobe of the left lung and the lower lobe of both lungs, the "
        "margins were indistinct.",
        {("patchy_opacity", True, "right", "middle"), ("patchy_opacity", True, "left", "upper"),
         ("patchy_opacity", True, "both", "lower")},
    ),
    # several lobes of one side, and a clause borrowing the place of the one before ("it")
    (
        "A ground glass shadow was seen in the upper and lower lobes of both lungs, and a "
        "bronchial air image was seen within it.",
        {("ground_glass_opacity", True, "both", "upper"),
         ("ground_glass_opacity", True, "both", "lower"),
         ("air_bronchogram", True, "both", "upper"), ("air_bronchogram", True, "both", "lower")},
    ),
    # the way translated CT reports describe effusion and pleural thickening
    (
        "Curved low density shadow was seen in the right thoracic cavity, and the left pleura "
        "was thickened.",
        {("effusion", True, "right", None), ("pleural_thickening", True, "left", None)},
    ),
    # chest X-ray zones
    ("Bibasilar atelectasis. Left basilar opacity.",
     {("atelectasis", True, "both", "lower"), ("patchy_opacity", True, "left", "lower")}),
    # "thoracic cavity" is not a cavity
    ("No abnormal density shadow was seen in the bilateral thoracic cavity.", set()),
    ("", set()),
]


@pytest.mark.parametrize(("report", "expected"), CASES, ids=[case[0][:40] for case in CASES])
def test_findings_of_hand_written_reports(english, report, expected):
    assert found(english, report) == expected


def test_raw_and_normalised_reports_give_the_same_findings(english):
    raw = "1. no pleural effusion.<BR>2. right lower lobe XXXX consolidation"
    assert english.extract_findings(raw) == english.extract_findings(english.normalize(raw))
    assert found(english, raw) == {
        ("effusion", False, None, None), ("consolidation", True, "right", "lower")
    }


def test_a_finding_placed_precisely_is_not_repeated_vaguely(english):
    report = "Nodule in the right upper lobe. Nodule. Nodule in the right lung."
    assert english.extract_findings(report) == [
        Finding(label="nodule", present=True, side="right", lobe="upper")
    ]


def test_merge_keeps_distinct_places_and_both_polarities():
    findings = [
        Finding(label="nodule", present=True),
        Finding(label="nodule", present=True, side="both", lobe="upper"),
        Finding(label="nodule", present=True, side="right", lobe="upper"),
        Finding(label="nodule", present=False, side="left"),
        Finding(label="nodule", present=True, side="both", lobe="upper"),
    ]
    assert merge_findings(findings) == findings[1:4]


def test_negation_scope_runs_to_a_terminator_or_back_from_a_cue():
    negation = Negation(
        before=re.compile(r"\bno\b"),
        after=re.compile(r"\bis absent\b"),
        pseudo=re.compile(r"\bno change\b"),
        terminators=re.compile(r"\bbut\b"),
    )

    def negated(clause: str, term: str) -> bool:
        start = clause.index(term)
        return negation.negates(clause, start, start + len(term))

    assert negated("no effusion but a nodule", "effusion")
    assert not negated("no effusion but a nodule", "nodule")
    assert not negated("no change in the mass", "mass")
    assert negated("a nodule but the cyst is absent", "cyst")
    assert not negated("a nodule but the cyst is absent", "nodule")


def test_every_extracted_label_is_a_named_finding(english):
    report = " ".join(case[0] for case in CASES)
    assert {f.label for f in english.extract_findings(report)} <= set(english.finding_names)


@pytest.mark.data
def test_real_chest_xray_reports(english, data_root):
    """IU X-ray val reports: nearly all state a finding; every label is one the language names."""
    annotation = json.loads((data_root / "iu-xray-reports" / "annotation.json").read_text())
    reports = [entry["report"] for entry in annotation["val"]]
    findings = [english.extract_findings(report) for report in reports]
    assert sum(map(bool, findings)) >= 0.95 * len(reports)
    assert {f.label for fs in findings for f in fs} <= set(english.finding_names)
