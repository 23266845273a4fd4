"""Spanish (`es`): text rules, prompts, and the sentence pairs that pull it into English's space.

Normal form: single spaces, no space before ``, . ; : ! ? )``, none after ``( ¿ ¡``, list
numbering removed, and a final full stop.  Sentences end at ``. ! ?`` followed by a space.
"""

from __future__ import annotations

import re
from importlib.resources import files

from m3fm.registry import LabelPrompts, LanguageSpec
from m3fm.sentence_pairs import read_sentence_pairs
from m3fm.text import collapse_whitespace, strip_list_markers, until_stable

# Numbers with a decimal part stay whole ("2,5"), then words, then any single mark.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|\w+|[^\w\s]")
_NO_SPACE_BEFORE = set(",.;:!?)%")
_NO_SPACE_AFTER = set("(¿¡")
_SENTENCE_GAP = re.compile(r"(?<=[.!?])\s+")

CLAUSES = files(__package__) / "data" / "clauses.tsv"
"""Hand-written English → Spanish translations of COV-CTR report clauses."""


def tokenize_words(text: str) -> list[str]:
    """Words and punctuation marks as separate tokens."""
    return _TOKEN.findall(text)


def join_words(words: list[str]) -> str:
    """Inverse of :func:`tokenize_words` on normalised text."""
    text = ""
    for word in words:
        glued = not text or word in _NO_SPACE_BEFORE or text[-1] in _NO_SPACE_AFTER
        text += word if glued else f" {word}"
    return text


def normalize(report: str) -> str:
    """Clean a raw Spanish report into the normal form above; idempotent."""
    return until_stable(_normalize_pass, report)


def _normalize_pass(text: str) -> str:
    text = join_words(tokenize_words(collapse_whitespace(text)))
    text = strip_list_markers(text, boundaries=".;:", terminator=". ")
    if text and text[-1] not in ".!?":
        text += "."
    return text


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` and a space."""
    return [sentence for sentence in _SENTENCE_GAP.split(text) if sentence]


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
    parallel_sentences=read_sentence_pairs(CLAUSES),
)
