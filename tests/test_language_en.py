"""The English language plugin: normal form, sentences, words, prompts and metric."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest
import sacrebleu

from m3fm.registry import UnknownNameError, get_registry

REQUIRED_LABELS = {
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening",
    "hernia", "covid19", "ground_glass_opacity", "lymphadenopathy",
}

# Raw text with the noise of real reports, and its normal form.
NORMAL_FORMS = [
    ("  The heart is normal.\n\nNo  effusion .  ", "The heart is normal. No effusion."),
    ("No acute findings", "No acute findings."),
    ("no pneumothorax. lungs are clear,", "No pneumothorax. Lungs are clear."),
    ("Heart size normal.Lungs clear.", "Heart size normal. Lungs clear."),
    ("No acute disease. .", "No acute disease."),
    ("Effusion , right side ; stable !", "Effusion, right side; stable!"),
    ("A “crazy paving” pattern – stable.", 'A "crazy paving" pattern - stable.'),
    ("Ｎｏ　ｅｆｆｕｓｉｏｎ．", "No effusion."),
    ("For<BR>metastatic disease &gt; 2 cm.", "For metastatic disease >2 cm."),
    ("Nodule ( 2.5 cm ) in the RUL.", "Nodule (2.5 cm) in the RUL."),
    ("pH and mAs are kept. CT and COVID-19 too.", "pH and mAs are kept. CT and COVID-19 too."),
    # list numbering
    ("1. Cardiomegaly. 2. Bilateral effusions.", "Cardiomegaly. Bilateral effusions."),
    ("1. Low lung volumes 2. Exam limited", "Low lung volumes. Exam limited."),
    ("Chest: 1. No acute process.", "Chest: No acute process."),
    ("Fracture of right rib 4. The fluid is deep.", "Fracture of right rib 4. The fluid is deep."),
    ("Stable. 2., Mild wedge deformity.", "Stable. Mild wedge deformity."),
    # XXXX placeholders
    ("The XXXX are intact. No pneumothorax.", "No pneumothorax."),
    ("Heart size normal. Calcified lymph XXXX.", "Heart size normal."),
    ("No XXXX focal airspace consolidation.", "No focal airspace consolidation."),
    ("May reflect a XXXX right pleural effusion.", "May reflect a right pleural effusion."),
    ("There is a XXXX airspace opacity.", "There is an airspace opacity."),
    ("XXXX blunting of the right sulcus.", "Blunting of the right sulcus."),
    ("No XXXX of pleural effusions.", "No pleural effusions."),
    ("There are no XXXX of a large pleural effusion.", "There are no large pleural effusion."),
    ("Negative chest x-XXXX. Normal X-XXXX of chest.",
     "Negative chest x-ray. Normal X-ray of chest."),
    ("Seen at XXXX hours XXXX/XXXX. XXXX unremarkable. Lungs clear.", "Lungs clear."),
    ("Multiple XXXX-filled loops of bowel.", "Multiple loops of bowel."),
    ("XXXX XXXX", ""),
    ("", ""),
]

TRICKY = [raw for raw, _ in NORMAL_FORMS] + [
    "1. 2. 3. Effusion",
    "e.g.3)the lung",
    "T11.1. Stable",
    '" " XXXX "quoted" ! ?',
    "Dr. XXXX, XXXX. approx. 2 cm e.g. left",
    "x-XXXX XXXX-A-XXXX in XXXX.",
    "((1)) a. b. c. 1.2.3. (2) x",
    "No XXXX of the.",
    " , . ; : ! ?",
]


@pytest.fixture
def english():
    return get_registry().language("en")


@functools.cache
def _iu_xray_reports(root: Path) -> list[str]:
    annotation = json.loads((root / "iu-xray-reports" / "annotation.json").read_text("utf-8"))
    reports = [entry["report"] for split in annotation.values() for entry in split]
    return random.Random(0).sample(reports, 600)


@functools.cache
def _cov_ctr_reports(root: Path) -> list[str]:
    annotation = json.loads((root / "cov-ctr" / "annotation.json").read_text("utf-8"))
    return [
        entry["report"] for split in annotation.values() for entry in split
        if entry["label1"] == "english"
    ]


def test_english_is_the_anchor_found_through_the_registry(english):
    assert (english.code, english.name, english.pivot) == ("en", "English", None)
    assert english.metric_tokenizer == "13a"


@pytest.mark.parametrize(("raw", "expected"), NORMAL_FORMS)
def test_normalize_gives_the_documented_normal_form(english, raw, expected):
    assert english.normalize(raw) == expected


@pytest.mark.parametrize("raw", TRICKY)
def test_normalize_is_idempotent_and_round_trips_on_tricky_strings(english, raw):
    normal = english.normalize(raw)
    assert english.normalize(normal) == normal
    assert english.join_words(english.tokenize_words(normal)) == normal
    assert "XXXX" not in normal


def test_normalize_is_idempotent_on_random_junk(english):
    pieces = [
        "1.", "2.", "3)", "(1)", " ", "\n", "XXXX", "x-XXXX", "XXXX/XXXX", "the", "a", "No",
        "of", "are", "effusion", "Heart", "e.g.", "approx.", "p.m.", "2.5 cm", ".", ",", ";",
        ":", "?", "!", '"', "'", "(", ")", "-", "—", "“", "<BR>", "&gt;", "１", "T11.", "/",
    ]
    rng = random.Random(0)
    for _ in range(2000):
        raw = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 20)))
        normal = english.normalize(raw)
        assert english.normalize(normal) == normal, raw
        assert english.join_words(english.tokenize_words(normal)) == normal, raw


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Tube tip 4.7 cm above the carina. No effusion.",
         ["Tube tip 4.7 cm above the carina.", "No effusion."]),
        ("Nodule of approx. 2 cm, e.g. a granuloma. Stable.",
         ["Nodule of approx. 2 cm, e.g. a granuloma.", "Stable."]),
        ("Discussed with Dr. Smith at 3 p.m. on the phone. Stable.",
         ["Discussed with Dr. Smith at 3 p.m. on the phone.", "Stable."]),
        ("Called at 3 p.m. No change.", ["Called at 3 p.m.", "No change."]),
        ("Pneumonia? Consider CT! (Stable.) Done",
         ["Pneumonia?", "Consider CT!", "(Stable.)", "Done"]),
        ("The lungs are clear; no effusion.", ["The lungs are clear; no effusion."]),
        ("", []),
    ],
)
def test_split_sentences(english, text, sentences):
    assert english.split_sentences(text) == sentences


def test_words_and_punctuation_are_separate_tokens(english):
    text = "Left-sided x-ray: 2.5 cm nodule (approx.), e.g. the patient's 1,000 \"crazy\" cells."
    assert english.tokenize_words(text) == [
        "Left-sided", "x-ray", ":", "2.5", "cm", "nodule", "(", "approx.", ")", ",", "e.g.",
        "the", "patient's", "1,000", '"', "crazy", '"', "cells", ".",
    ]
    assert english.join_words(english.tokenize_words(text)) == text


def test_prompts_fill_every_template(english):
    positive, negative = english.prompts("effusion")
    assert len(positive) == len(english.positive_templates) >= 3
    assert len(negative) == len(english.negative_templates) >= 3
    assert "No evidence of pleural effusion." in negative
    assert all("pleural effusion" in prompt and "{" not in prompt for prompt in positive + negative)


def test_unknown_label_lists_the_known_ones(english):
    with pytest.raises(UnknownNameError) as error:
        english.prompts("fracture")
    assert "fracture" in str(error.value) and "pneumothorax" in str(error.value)
    assert error.value.available == sorted(english.finding_names)


def test_every_label_of_the_installed_modalities_has_a_name(english):
    registry = get_registry()
    modalities = [registry.modality(name) for name in registry.names("modality")]
    labels = {label for modality in modalities for label in modality.labels}
    assert REQUIRED_LABELS | labels <= set(english.finding_names)
    assert english.finding_names["covid19"] == "COVID-19 pneumonia"


def test_sacrebleu_accepts_the_metric_tokenizer(english):
    reference = english.normalize("No focal consolidation , pleural effusion or pneumothorax.")
    tokenize = english.metric_tokenizer
    perfect = sacrebleu.corpus_bleu([reference], [[reference]], tokenize=tokenize)
    partial = sacrebleu.corpus_bleu(
        ["No focal consolidation or pneumothorax."], [[reference]], tokenize=tokenize
    )
    assert perfect.score == pytest.approx(100.0)
    assert 0 < partial.score < 100


@pytest.mark.data
def test_normalize_is_idempotent_on_real_reports(english, data_root):
    for report in _cov_ctr_reports(data_root) + _iu_xray_reports(data_root):
        normal = english.normalize(report)
        assert english.normalize(normal) == normal, report
        assert "XXXX" not in normal and "  " not in normal, report


@pytest.mark.data
def test_words_round_trip_on_real_normalised_reports(english, data_root):
    for report in _cov_ctr_reports(data_root) + _iu_xray_reports(data_root):
        normal = english.normalize(report)
        assert english.join_words(english.tokenize_words(normal)) == normal, report


@pytest.mark.data
def test_real_reports_keep_their_content(english, data_root):
    # COV-CTR English reports are clean: only the trailing newline goes and, in a few,
    # a missing final full stop is added.
    reports = _cov_ctr_reports(data_root)
    changed = [report for report in reports if english.normalize(report) != report.strip()]
    assert len(changed) <= 20
    assert all(english.normalize(report) == report.strip() + "." for report in changed)
