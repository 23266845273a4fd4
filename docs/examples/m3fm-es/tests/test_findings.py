"""The Spanish finding extractor reads what the English one reads in the same report."""

import pytest
from m3fm_es.findings import extract_findings
from m3fm_es.language import CLAUSES

from m3fm.registry import Finding, get_registry
from m3fm.sentence_pairs import read_sentence_pairs


@pytest.mark.parametrize(("report", "expected"), [
    ("Se observan opacidades en vidrio esmerilado en el lóbulo inferior de ambos pulmones.",
     {Finding(label="ground_glass_opacity", present=True, side="both", lobe="lower")}),
    ("No se observaron adenopatías mediastínicas.",
     {Finding(label="lymphadenopathy", present=False)}),
    ("Se observó una imagen hipodensa en arco en la cavidad pleural derecha.",
     {Finding(label="effusion", present=True, side="right")}),
    ("Se observó una imagen hipodensa en arco en la cavidad pericárdica.",
     {Finding(label="pericardial_effusion", present=True)}),
    ("La trama pulmonar bilateral era nítida y se observó una consolidación parcheada en el "
     "lóbulo superior del pulmón derecho.",
     {Finding(label="consolidation", present=True, side="right", lobe="upper")}),
    ("Se observaron pequeñas opacidades laminares en el lóbulo medio del pulmón derecho, la "
     "língula del lóbulo superior del pulmón izquierdo y el lóbulo inferior de ambos pulmones.",
     {Finding(label="patchy_opacity", present=True, side=side, lobe=lobe)
      for side, lobe in (("right", "middle"), ("left", "upper"), ("both", "lower"))}),
    ("No se observan opacidades de densidad anormal en ambas cavidades pleurales.", set()),
])
def test_findings_negation_and_places(report, expected):
    assert set(extract_findings(report)) == expected


def test_it_agrees_with_the_english_extractor_on_the_clause_table():
    """Label ids, presence, side and lobe must match for a Spanish report to be scored
    against English references; 349 of the 350 clause pairs agree exactly."""
    english = get_registry().language("en").extract_findings
    pairs = read_sentence_pairs(CLAUSES)
    agreeing = sum(set(english(en)) == set(extract_findings(es)) for en, es in pairs)
    assert agreeing >= 0.98 * len(pairs)


def test_the_language_offers_it():
    read = get_registry().language("es").extract_findings
    assert read("Sin neumotórax.") == [Finding(label="pneumothorax", present=False)]
