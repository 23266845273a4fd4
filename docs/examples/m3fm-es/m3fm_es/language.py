"""Spanish (`es`): prompts, finding extraction, and the sentence pairs that pull it into
English's space; the text rules are in :mod:`m3fm_es.text`, the findings in
:mod:`m3fm_es.findings`.
"""

from __future__ import annotations

from importlib.resources import files

from m3fm.registry import LabelPrompts, LanguageSpec
from m3fm.sentence_pairs import read_sentence_pairs

from .findings import extract_findings
from .text import join_words, normalize, split_sentences, tokenize_words

CLAUSES = files(__package__) / "data" / "clauses.tsv"
"""Hand-written English → Spanish translations of COV-CTR report clauses."""

# Descriptive prompts for COVID-19 written as COV-CTR's reports (translated) describe it.
LABEL_PROMPTS = {
    "covid19": LabelPrompts(
        positive=(
            "Se observan opacidades en vidrio esmerilado en ambos pulmones.",
            "Se observan múltiples opacidades parcheadas en vidrio esmerilado en ambos "
            "pulmones, con márgenes mal definidos.",
            "Opacidades periféricas bilaterales en vidrio esmerilado, compatibles con "
            "neumonía por COVID-19.",
        ),
        negative=(
            "No se observan opacidades de densidad anormal en ambos pulmones.",
            "No se observan opacidades en vidrio esmerilado en ambos pulmones.",
            "Sin opacidades en vidrio esmerilado; sin signos de neumonía por COVID-19.",
        ),
    ),
}

SPEC = LanguageSpec(
    code="es",
    name="Spanish",
    pivot="en",
    normalize=normalize,
    split_sentences=split_sentences,
    tokenize_words=tokenize_words,
    join_words=join_words,
    metric_tokenizer="13a",
    finding_names={
        "covid19": "neumonía por COVID-19",
        "ground_glass_opacity": "opacidad en vidrio esmerilado",
        "consolidation": "consolidación",
        "effusion": "derrame pleural",
    },
    positive_templates=("Se observa {finding}.", "Hallazgos compatibles con {finding}."),
    negative_templates=("No se observa {finding}.", "Sin signos de {finding}."),
    label_prompts=LABEL_PROMPTS,
    extract_findings=extract_findings,
    parallel_sentences=read_sentence_pairs(CLAUSES),
)
