"""The m3fm conformance kit on the Spanish plugin, and the Spanish it builds."""

from m3fm_es.translation import ClauseTranslator

from m3fm.registry import get_registry
from m3fm.registry.testing import check_language

SAMPLES = [
    "El tórax es simétrico, la silueta cardiomediastínica está centrada.  1. Sin derrame",
    "Se observan opacidades en vidrio esmerilado en ambos pulmones, con márgenes mal "
    "definidos (lóbulo inferior derecho).",
]


def test_the_plugin_is_discovered_and_conforms():
    check_language(get_registry().language("es"), SAMPLES)


def test_the_clause_table_is_shipped_as_pivot_sentences():
    pairs = get_registry().language("es").parallel_sentences
    assert len(pairs) >= 300
    assert ("the thorax was symmetrical", "el tórax era simétrico") in pairs


def test_a_report_is_translated_only_when_every_clause_is_known():
    translator = ClauseTranslator()
    report = ("The thorax was symmetrical, the mediastinal heart shadow was centered, and no "
              "enlarged lymph nodes were seen in the mediastinum.")
    assert translator.translate(report) == (
        "El tórax era simétrico, la silueta cardiomediastínica estaba centrada y no se "
        "observaron adenopatías mediastínicas.")
    assert translator.translate("The thorax was symmetrical, a unicorn was seen.") is None


def test_the_cov_ctr_es_format_is_chosen_by_name_only(tmp_path):
    spec = get_registry().dataset("cov-ctr-es")
    assert spec.detect(tmp_path) is False
