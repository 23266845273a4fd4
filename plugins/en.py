"""English (`en`): the anchor language every other language is aligned through.

Normal form of an English report, and why:

* Case is kept.  Downstream text models lower-case if they want to, but case cannot be
  restored once lost ("CT", "COVID-19", "AP" view), and sacrebleu can score with
  ``lowercase=True``.  Only the first letter of a sentence is capitalised.
* HTML left over from export (``<BR>``, ``&gt;``) is decoded, full-width characters, curly
  quotes and dashes become ASCII, whitespace collapses to single spaces.
* List numbering ("1. ", "2) ") is removed; an item that was glued to the previous one
  ("… disease 2. No acute …") becomes a sentence of its own.
* Doubled punctuation collapses (". ." → ".", ", ." → "."), and every sentence ends with
  ``.``, ``!`` or ``?`` followed by exactly one space.
* Spacing around punctuation is the one :func:`join_words` produces, so
  ``join_words(tokenize_words(text)) == text`` holds for every normalised report.
* ``XXXX`` anonymisation placeholders (a word containing ``XXXX``; neighbours joined by
  ``/`` or ``-`` belong to the same gap) are handled per sentence.  "x-XXXX" is the
  anonymiser masking "ray" and is restored to "x-ray".  A gap followed by a content word
  modified a word that is still there, so it is deleted in place ("a XXXX right pleural
  effusion" → "a right pleural effusion").  A gap at the end of a sentence or before a
  function word ("The XXXX are intact", "Calcified lymph XXXX.") was the word the
  sentence was about, so the whole sentence is dropped rather than left ungrammatical; so
  is a sentence with fewer than two words left.  One frequent exception keeps negative
  findings: "no XXXX of (a|the) …" hid "evidence" or "signs" and reads "no …".
"""

from __future__ import annotations

import html
import re

from m3fm.registry import LanguageSpec, hookimpl
from m3fm.text import (
    collapse_punctuation_runs,
    collapse_whitespace,
    fullwidth_to_ascii,
    strip_list_markers,
    until_stable,
)

# Abbreviations that end with a full stop but never end a sentence ("approx. 2 cm").
_ABBREVIATIONS = ("e.g", "i.e", "approx", "Drs", "Dr", "Mrs", "Mr", "Ms", "vs", "cf", "Figs", "Fig")
_ABBREVIATION = rf"(?i:{'|'.join(re.escape(short) for short in _ABBREVIATIONS)})\."
# Letters with full stops ("a.m.", "U.S."): one word, which ends a sentence before a capital.
_INITIALISM = r"(?:[A-Za-z]\.){2,}"

# Part of a word: a number with decimals, thousands or clock time and any unit glued to it
# ("2.5", "1,000", "12:30", "2.5cm"), or a run of letters and digits.
_WORD_PART = r"\d+(?:[.,:]\d+)+[A-Za-z]*|[A-Za-z0-9]+"
# One token: an abbreviation; a word, whose parts hyphens and apostrophes join ("x-ray",
# "COVID-19", "patient's", "2.3-cm"); else any single non-space character.
_TOKEN = re.compile(
    rf"(?:{_ABBREVIATION}|{_INITIALISM})(?![A-Za-z])|(?:{_WORD_PART})(?:['-](?:{_WORD_PART}))*|\S"
)
# Tokens written without a space before / after them.
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%/°")
_NO_SPACE_AFTER = frozenset("([{/<>~#$°")

# Where a sentence ends: terminal punctuation, any closing brackets or quotes, then a space.
_SENTENCE_GAP = re.compile(r"[.!?][)\]\"']*(?P<gap>\s+)")
# A candidate sentence that actually stops on an abbreviation or an initialism.
_ENDS_WITH_ABBREVIATION = re.compile(rf"(?<![\w.]){_ABBREVIATION}$")
_ENDS_WITH_INITIALISM = re.compile(rf"(?<![\w.]){_INITIALISM}$")
# A sentence already closed by terminal punctuation (and possibly brackets or quotes).
_CLOSED_SENTENCE = re.compile(r"[.!?][)\]\"']*$")
# Weak punctuation left dangling at the very end of a report.
_TRAILING_WEAK_PUNCTUATION = re.compile(r"[\s,;:]+$")

# HTML line breaks that survive in exported reports.
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Typographic quotes and dashes, folded to their ASCII forms.
_TYPOGRAPHIC = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2015": "-", "\u2212": "-",
})
# "x-XXXX": the anonymiser masked "ray" in "x-ray" (keeps the case of the x).
_MASKED_XRAY = re.compile(r"\b([Xx])-(?i:XXXX)\b")
# A token that is, or contains, an anonymisation placeholder (lower-cased corpora have "xxxx").
_PLACEHOLDER = re.compile(r"XXXX", re.IGNORECASE)
# Tokens that may sit between two placeholders of the same gap ("XXXX/XXXX").
_PLACEHOLDER_JOINERS = frozenset("/-")
# Words that cannot directly follow the noun a placeholder replaced: deleting the placeholder
# would leave "The are intact" or "Visualized of the chest", so the sentence is dropped.
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "this", "that", "these", "those",
    "of", "in", "on", "at", "to", "for", "with", "within", "without", "from", "by", "as",
    "than", "into", "onto", "over", "under", "and", "or", "but", "nor", "versus", "vs.",
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had",
    "appear", "appears", "appeared", "remain", "remains", "remained", "seem", "seems",
    "may", "might", "can", "could", "will", "would", "should", "must", "which", "who",
))
_ARTICLES = frozenset(("a", "an", "the"))
_INDEFINITE_ARTICLES = frozenset(("a", "an"))
# Words starting with a vowel sound, for "a"/"an" after a gap is deleted ("an airspace").
_VOWEL_SOUND = re.compile(r"(?i)(?:[aeio]|u(?!ni|s[eu]|r[eo]))")
# A sentence's first word when it is all lower case (so "pH" and "mAs" keep their case).
_LOWERCASE_FIRST_WORD = re.compile(r"[a-z]+\b")

_SENTENCE_MARKS = ".!?"
_PUNCTUATION_BY_STRENGTH = ",:;.!?"


def tokenize_words(text: str) -> list[str]:
    """Words and punctuation marks as separate tokens; decimals and abbreviations stay whole."""
    return _TOKEN.findall(text)


def join_words(words: list[str]) -> str:
    """Inverse of :func:`tokenize_words`: re-attach punctuation, brackets and quotes."""
    parts: list[str] = []
    inside_quotes = False  # straight quotes open and close in turn
    previous = ""
    for word in words:
        glued = (
            word in _NO_SPACE_BEFORE
            or previous in _NO_SPACE_AFTER
            or (word == '"' and inside_quotes)  # closing quote
            or (previous == '"' and inside_quotes)  # right after the opening quote
        )
        if parts and not glued:
            parts.append(" ")
        parts.append(word)
        if word == '"':
            inside_quotes = not inside_quotes
        previous = word
    return "".join(parts)


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` and a space; never inside "2.5 cm" or after "e.g.".

    After an initialism ("3 p.m.") a sentence ends only if the next word is capitalised.
    """
    sentences, start = [], 0
    for match in _SENTENCE_GAP.finditer(text):
        candidate = text[start : match.start("gap")]
        next_is_capital = text[match.end() : match.end() + 1].isupper()
        if _ENDS_WITH_ABBREVIATION.search(candidate) or (
            _ENDS_WITH_INITIALISM.search(candidate) and not next_is_capital
        ):
            continue
        sentences.append(candidate)
        start = match.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if sentence.strip()]


def normalize(report: str) -> str:
    """Clean a raw English report into the normal form described in the module docstring."""
    return until_stable(_normalize_pass, report)


def _normalize_pass(text: str) -> str:
    text = fullwidth_to_ascii(html.unescape(_HTML_BREAK.sub(" ", text)))
    text = collapse_whitespace(text.translate(_TYPOGRAPHIC))
    text = _MASKED_XRAY.sub(r"\1-ray", text)
    # Markers are looked for in canonical spacing ("e.g.3)" hides one), and runs are collapsed
    # on both sides: "2., Mild" hides a marker, "Foo, 2. Bar" becomes "Foo,. Bar".
    text = collapse_punctuation_runs(text, _PUNCTUATION_BY_STRENGTH)
    text = join_words(tokenize_words(text))
    text = strip_list_markers(text, boundaries=_SENTENCE_MARKS + ":;", terminator=". ")
    text = collapse_punctuation_runs(text, _PUNCTUATION_BY_STRENGTH)
    sentences = [_without_placeholders(sentence) for sentence in split_sentences(text)]
    text = join_words(tokenize_words(" ".join(_capitalise(s) for s in sentences if s)))
    if text and not _CLOSED_SENTENCE.search(text):
        text = _TRAILING_WEAK_PUNCTUATION.sub("", text) + "."
    return text


def _without_placeholders(sentence: str) -> str | None:
    """The sentence with its placeholder gaps deleted, or None when it must be dropped."""
    if not _PLACEHOLDER.search(sentence):
        return sentence
    tokens = tokenize_words(sentence)
    kept: list[str] = []
    index = 0
    while index < len(tokens):
        if not _PLACEHOLDER.search(tokens[index]):
            kept.append(tokens[index])
            index += 1
            continue
        index = _end_of_gap(tokens, index)
        if kept and kept[-1].lower() == "no":
            index = _skip_masked_of(tokens, index)
        following = tokens[index] if index < len(tokens) else None
        if following is None or not following[0].isalnum() or following.lower() in _FUNCTION_WORDS:
            return None
        if kept and kept[-1].lower() in _INDEFINITE_ARTICLES:
            article = "an" if _VOWEL_SOUND.match(following) else "a"
            kept[-1] = article.capitalize() if kept[-1][0].isupper() else article
    if sum(token[0].isalnum() for token in kept) < 2:
        return None
    return join_words(kept)


def _end_of_gap(tokens: list[str], index: int) -> int:
    """Index just past the placeholder gap starting at `index` ("XXXX/XXXX" is one gap)."""
    index += 1
    while (
        index + 1 < len(tokens)
        and tokens[index] in _PLACEHOLDER_JOINERS
        and _PLACEHOLDER.search(tokens[index + 1])
    ):
        index += 2
    return index


def _skip_masked_of(tokens: list[str], index: int) -> int:
    """Past "of" and an article after "no XXXX": the mask hid "evidence" or "signs"."""
    if index < len(tokens) and tokens[index].lower() == "of":
        index += 1
        if index < len(tokens) and tokens[index].lower() in _ARTICLES:
            index += 1
    return index


def _capitalise(sentence: str) -> str:
    if _LOWERCASE_FIRST_WORD.match(sentence):
        return sentence[0].upper() + sentence[1:]
    return sentence


FINDING_NAMES = {
    "atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "effusion": "pleural effusion",
    "infiltration": "pulmonary infiltrate",
    "mass": "pulmonary mass",
    "nodule": "pulmonary nodule",
    "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "edema": "pulmonary edema",
    "emphysema": "emphysema",
    "fibrosis": "pulmonary fibrosis",
    "pleural_thickening": "pleural thickening",
    # The "Hernia" class of chest radiograph label sets is, in practice, hiatal hernia.
    "hernia": "hiatal hernia",
    "covid19": "COVID-19 pneumonia",
    "ground_glass_opacity": "ground-glass opacity",
    "lymphadenopathy": "mediastinal lymphadenopathy",
}
"""Label id → radiology term, singular and without article, to read well in every template."""

# Phrasings that are frequent in real English chest reports (IU X-ray counts: "no evidence
# of" 425, "negative for" 201, "consistent with" 140, "compatible with" 90, "suggestive of" 46).
POSITIVE_TEMPLATES = (
    "Findings consistent with {finding}.",
    "Findings compatible with {finding}.",
    "There is evidence of {finding}.",
    "Findings suggestive of {finding}.",
)
NEGATIVE_TEMPLATES = (
    "No {finding}.",
    "No evidence of {finding}.",
    "Negative for {finding}.",
    "There is no {finding}.",
)

SPEC = LanguageSpec(
    code="en",
    name="English",
    pivot=None,
    normalize=normalize,
    split_sentences=split_sentences,
    tokenize_words=tokenize_words,
    join_words=join_words,
    metric_tokenizer="13a",
    finding_names=FINDING_NAMES,
    positive_templates=POSITIVE_TEMPLATES,
    negative_templates=NEGATIVE_TEMPLATES,
)


@hookimpl
def m3fm_languages() -> list[LanguageSpec]:
    """The English language."""
    return [SPEC]
