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

from m3fm.findings import FindingRules, Location, Negation
from m3fm.registry import Finding, LanguageSpec, hookimpl
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
    "patchy_opacity": "patchy opacity",
    "reticulation": "reticular opacity",
    "linear_opacity": "linear opacity",
    "air_bronchogram": "air bronchogram",
    "cavity": "pulmonary cavity",
    "bronchiectasis": "bronchiectasis",
    "calcification": "calcification",
    "crazy_paving": "crazy-paving pattern",
    "subpleural_line": "subpleural line",
    "tree_in_bud": "tree-in-bud pattern",
    "vascular_enlargement": "vascular enlargement",
    "pericardial_effusion": "pericardial effusion",
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

# The prompts of each diagnosis label come first from the modality plugins' `m3fm_labels()`
# (the English prompts of COVID-19, say, describe its imaging signs and live with the CT and
# chest X-ray labels); the templates above serve labels that no modality gives prompts for.

# Finding extraction.  Terms per label id, matched case-insensitively in normalised text.
# They cover the CT wording of COV-CTR (a translation of Chinese reports, hence "solid
# shadow" for consolidation and "lamellar shadow" for a patchy one) and the chest X-ray
# wording of IU X-ray.  Modifiers that belong to a finding are part of its term, so that
# "patchy" in "patchy ground glass shadow" is not also read as a patchy opacity.
# Size, number and shape words that may precede a finding's name.
_SIZE = (
    r"(?:(?:small|large|big|faint|pale|multiple|diffuse|scattered|limited|localized|"
    r"halo-like|striated|striped|patch(?:y|es of)|lamellar|flaky)\s+)*"
)
# Fluid density, and the pleural space, as translated CT reports describe an effusion
# ("curved low density shadow was seen in the right thoracic cavity").
_FLUID = r"\b(?:low[- ]density|hypo(?:intense|dense)|liquid|fluid)\b"
_PLEURAL_SPACE = r"\b(?:thora(?:x|cic\s+cavit(?:y|ies))|(?:chest|pleural)\s+cavit(?:y|ies))\b"
_FINDING_TERMS = {
    "ground_glass_opacity": (
        rf"{_SIZE}(?:(?:ground|hairy|frosted)[- ]?glass|glassy|GGOs?\b)"
        r"(?:\s+(?:opacit(?:y|ies)|shadows?|densit(?:y|ies)))?"
    ),
    "consolidation": (
        rf"{_SIZE}(?:(?:airspace|alveolar|lobar)\s+)?consolidat\w*"
        rf"|{_SIZE}solid(?=\s+(?:shadows?|lesions?|changes?|densit|opacit|and\b))"
        r"(?:\s+(?:shadows?|lesions?|changes?|densit(?:y|ies)|opacit(?:y|ies)))?"
    ),
    "patchy_opacity": (
        r"\bpatch(?:y|es)\b|\blamell\w*|\bflak(?:y|es)\b"
        r"|\b(?:(?:airspace|alveolar|hazy|focal|patchy|parenchymal)\s+)*(?:opacit(?:y|ies)|"
        r"airspace disease)"
    ),
    "reticulation": (
        r"\b(?:reticul\w*|grid(?:-like)?|mesh(?:-like)?|lattice)\b"
        r"|\binterstitial\s+(?:opacit(?:y|ies)|markings?|pattern|thickening|changes?|prominence)"
        r"|\bseptal thickening"
    ),
    "linear_opacity": (
        r"\b(?:(?:lamellar|small|multiple|fine)\s+)*(?:cords?|cord-like|strip(?:e|es|s)?|"
        r"striped|striat\w+|stria(?:e|tions?)?)\b(?!\s+(?:solid|ground|glass))"
        r"|\b(?:linear|fibrous)\s+(?:opacit(?:y|ies)|shadows?|densit(?:y|ies)|strands?|stripes?)"
    ),
    "nodule": r"\b(?:micro)?nodul(?:e|es|ar)\b|\bgranulomas?\b",
    "mass": r"\bmass(?:es)?\b",
    "lymphadenopathy": (
        r"\b(?:lymphadenopathy|adenopathy)\b"
        r"|\b(?:enlarged|swollen|enlargement of)\s+(?:\w+\s+){0,2}?lymph\s+nodes?"
        r"|\blymph\s+nodes?\s+(?:were\s+|was\s+|is\s+|are\s+)?(?:enlarged|enlargement)"
    ),
    "effusion": (
        r"\b(?:pleural\s+)?effusions?\b|\bhydrothorax\b|\bpleural\s+fluid\b"
        rf"|{_FLUID}[^,;]{{0,40}}?{_PLEURAL_SPACE}|{_PLEURAL_SPACE}[^,;]{{0,40}}?{_FLUID}"
    ),
    "pericardial_effusion": (
        r"\bpericardial\s+effusions?\b"
        rf"|{_FLUID}[^,;]{{0,40}}?\bpericardi\w*|\bpericardi\w*[^,;]{{0,40}}?{_FLUID}"
    ),
    "pneumothorax": (
        r"\bpneumothora\w*"
        r"|\bgas(?:[\s-]+\w+){0,3}?\s+shadows?\s+(?:(?:was|were|is|are)\s+)?(?:seen\s+)?"
        r"in\s+the\s+(?:\w+\s+)?(?:thora\w*|chest\b|pleural\s+cavit\w*)"
    ),
    "pleural_thickening": (
        r"\bpleura\w*\b[^,;]{0,30}?\bthicken\w*|\bthicken\w*[^,;]{0,30}?\bpleura\w*"
    ),
    "atelectasis": r"\batelecta\w*|\bcollapsed?\b|\bcompress(?:ed|ion)\b",
    "air_bronchogram": (
        r"\bair[- ]?bronchogram\w*|\bbronch\w*\s+(?:gas|air|inflation)\s+(?:images?|signs?)"
    ),
    "cavity": (
        r"(?<!thoracic )(?<!chest )(?<!pleural )(?<!pericardial )(?<!abdominal )(?<!oral )"
        r"\bcavit(?:y|ies|ation|ary)\b"
    ),
    "bronchiectasis": (
        r"\bbronchiectas\w*|\bbronch\w*[^,;]{0,120}?\b(?:widen|dilat)\w*"
        r"|\b(?:widen|dilat)\w*\s+(?:of\s+)?(?:the\s+)?bronch\w*"
    ),
    "calcification": r"\bcalcif\w*",
    "crazy_paving": r"\b(?:paving[- ]stone|crazy[- ]paving)\b",
    "subpleural_line": r"\bsub-?pleural\s+lines?\b",
    "tree_in_bud": r"\btree[- ](?:in[- ])?bud\b|\bdendritic\s+signs?\b",
    "vascular_enlargement": (
        r"\b(?:thickened|enlarged|dilated|widened)\s+(?:blood\s+)?(?:vessels?|vascular)\b"
        r"|\b(?:blood\s+)?vessels?\s+(?:\w+\s+){0,3}?(?:were|was|are|is)\s+"
        r"(?:thickened|enlarged|dilated)\b|\bvascular\s+(?:thickening|enlargement)\b"
    ),
    "emphysema": r"\bemphysema\w*|\bbull(?:a|ae|ous)\b|\bhyperinfla\w+|\bhyperexpan\w+",
    "fibrosis": r"\bfibros\w+|\bfibrotic\b|\bhoneycomb\w*|\bscar(?:s|ring)?\b",
    "edema": r"\bo?edema\b",
    "pneumonia": r"\bpneumon(?:ia|itis)\b",
    "infiltration": r"\binfiltrat\w*",
    "hernia": r"\bhernia\w*",
    "cardiomegaly": (
        r"\bcardiomegaly\b|\bcardiac enlargement\b|\benlarged (?:heart|cardiac silhouette)\b"
        r"|\b(?:heart|cardiac)(?:\s+(?:size|silhouette|shadow))?\s+(?:is|was|are|appears?|remains?)"
        r"\s+(?:\w+\s+)?(?:large|enlarged)\b"
    ),
}
# Phrases that state a finding is absent by themselves, with no negation cue to find.
# "The heart and mediastinum", "Heart size and pulmonary vascularity": a second subject.
_HEART_AND = r"(?:\s+and\s+(?:the\s+)?(?:\w+\s+)?\w+)?"
_ABSENT_FINDING_TERMS = {
    "cardiomegaly": (
        rf"\b(?:heart|cardiac|cardiomediastinal)(?:\s+(?:size|silhouette|shadow|contours?))?"
        rf"{_HEART_AND}\s+"
        r"(?:(?:is|are|was|were|appears?|remains?)\s+)?(?:normal|within normal limits|"
        r"not (?:large|enlarged)|unremarkable)"
        r"|\bnormal(?:-sized| size of the)? (?:heart|cardiac)(?:\s+(?:size|silhouette))?"
    ),
}
# Cues that negate what follows them in a clause.
_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|resolution of)\b", re.IGNORECASE
)
# Cues that negate what precedes them: "pneumothorax is not seen", "the effusion has resolved".
_NEGATION_AFTER = re.compile(
    r"\b(?:(?:is|are|was|were)\s+not\s+(?:seen|present|identified|visuali[sz]ed|noted|"
    r"detected|demonstrated|evident|appreciated|observed)|(?:is|are|was|were)\s+absent"
    r"|(?:has|have)\s+resolved)\b",
    re.IGNORECASE,
)
# Look like negation cues but deny no finding: "no change in", "cannot be excluded".
_PSEUDO_NEGATION = re.compile(
    r"\b(?:no\s+(?:significant\s+|interval\s+)?changes?|not\s+only|no\s+longer\s+present"
    r"|cannot\s+be\s+(?:excluded|ruled\s+out)|not\s+(?:be\s+)?(?:excluded|ruled\s+out))\b",
    re.IGNORECASE,
)
# Words after which a negation no longer reaches: "no effusion, but ..." within one clause.
_NEGATION_TERMINATORS = re.compile(
    r"\b(?:but|however|although|though|whereas|while|except|yet|which)\b", re.IGNORECASE
)
# A finite verb: a comma before a segment with one starts a new clause, not a list item.
_VERB = re.compile(
    r"\b(?:is|are|was|were|be|been|has|have|had|seen|noted|shows?|showed|shown|demonstrat\w+|"
    r"appears?|appeared|remains?|remained|measur\w+|visuali[sz]ed|identified|suggests?|may|"
    r"can|could|might)\b",
    re.IGNORECASE,
)
# A list item that closes a list: "No effusion, pneumothorax, or consolidation (is seen)",
# "No consolidation, effusion/pneumothorax".
_CLOSES_LIST = re.compile(r"^(?:or|nor)\b|\s(?:or|nor)\s|\w/\w", re.IGNORECASE)
# A segment that only names more places: ", the lower lobe of both lungs and ...".
_PLACE_LIST_ITEM = re.compile(r"^(?:and\s+)?the\b", re.IGNORECASE)
# Any finding term at all, to tell a list of places from a clause stating a finding.
_ANY_FINDING_TERM = re.compile("|".join(_FINDING_TERMS.values()), re.IGNORECASE)

# One or more lobes: "upper", "upper and lower", "upper lobe and lower".
_LOBES = (
    r"(?:upper|middle|lower)"
    r"(?:(?:\s+lobes?)?\s*(?:,|and|or|&)\s*(?:the\s+)?(?:upper|middle|lower))*"
)
# Places, as one alternation tried left to right: lobes before their lung ("the upper and
# lower lobes of both lungs", "the dorsal segment of the lower lobe of the right lung"), lung
# before lobe ("right upper lobe"), a lobe alone, zones written as base or apex, the lingula
# (part of the left upper lobe), a side alone ("both lungs", "left thoracic cavity",
# "bilaterally"), and the mediastinum (a place with no side).
_PLACE = re.compile(
    rf"\b(?P<lobes_of>{_LOBES})\s+(?:\w+\s+)?lobes?\s+of\s+(?:the\s+)?"
    r"(?P<side_of>right|left|both|bilateral|two)\s+lungs?"
    rf"|\b(?P<side_lobe>right|left)\s+(?:lung\s+)?(?P<lobes>{_LOBES})\s+lobes?"
    rf"|\b(?P<lobes_only>{_LOBES})\s+(?:\w+\s+)?lobes?\b"
    r"|\b(?P<side_zone>right|left|bilateral|both)\s+(?:lung\s+)?(?:(?P<base>bas(?:e|es|al|ilar))"
    r"|ap(?:ex|ices|ical))\b"
    r"|\b(?P<bibasilar>bibasilar|bibasal)\b|\b(?P<biapical>biapical)\b"
    r"|\b(?P<lingula>lingula\w*|lingual|tongue segment)\b"
    r"|\b(?P<side>right|left|both|bilateral|two)\s+(?:\w+\s+)?(?:lungs?|thora\w*|hemithora\w*|"
    r"chest|pleura\w*|sides?|hil\w+|pulmonary)\b|\b(?P<bilaterally>bilaterally)\b"
    r"|\b(?P<mediastinum>mediastin\w*)\b",
    re.IGNORECASE,
)
# Each lobe named in a match of _LOBES.
_LOBE_WORD = re.compile(r"upper|middle|lower", re.IGNORECASE)
_SIDE_WORDS = {"right": "right", "left": "left", "both": "both", "bilateral": "both", "two": "both"}


def _locate(clause: str) -> list[Location]:
    """Sides and lobes a clause names, in text order (mediastinum: a place without either)."""
    places: list[Location] = []
    for match in _PLACE.finditer(clause):
        groups = {name: value.lower() for name, value in match.groupdict().items() if value}
        side = _SIDE_WORDS.get(
            groups.get("side_of") or groups.get("side_lobe") or groups.get("side_zone")
            or groups.get("side", "")
        )
        if lobes := groups.get("lobes_of") or groups.get("lobes") or groups.get("lobes_only"):
            places += [(side, lobe) for lobe in _LOBE_WORD.findall(lobes)]
        elif "side_zone" in groups:
            places.append((side, "lower" if "base" in groups else "upper"))
        elif "bibasilar" in groups or "biapical" in groups:
            places.append(("both", "lower" if "bibasilar" in groups else "upper"))
        elif "lingula" in groups:
            places.append(("left", "upper"))
        elif "bilaterally" in groups:
            places.append(("both", None))
        elif "mediastinum" in groups:
            places.append((None, None))
        else:
            places.append((side, None))
    return list(dict.fromkeys(places))


def _split_clauses(sentence: str) -> list[str]:
    """Split at ";" and at commas, keeping list items ("no A, B, or C") and lists of places.

    A comma continues the clause when the segment after it, or one of the verbless segments
    right after that, closes an "or" list, or when the segment has no verb and only names
    more places ("…in the right middle lobe, the lingula and the left lower lobe").
    """
    clauses: list[str] = []
    for part in sentence.split(";"):
        segments = [segment.strip() for segment in part.split(",")]
        for index, segment in enumerate(segments):
            if clauses and index > 0 and _continues(segments, index):
                clauses[-1] += ", " + segment
            else:
                clauses.append(segment)
    return [clause for clause in clauses if clause]


def _continues(segments: list[str], index: int) -> bool:
    for following in segments[index:]:
        if _CLOSES_LIST.search(following):
            return True
        if _VERB.search(following):
            break
    segment = segments[index]
    return bool(
        not _VERB.search(segment)
        and _PLACE_LIST_ITEM.match(segment)
        and _PLACE.search(segment)
        and not _ANY_FINDING_TERM.search(segment)
    )


_FINDING_RULES = FindingRules(
    terms=_FINDING_TERMS,
    absent_terms=_ABSENT_FINDING_TERMS,
    negation=Negation(
        before=_NEGATION_BEFORE,
        after=_NEGATION_AFTER,
        pseudo=_PSEUDO_NEGATION,
        terminators=_NEGATION_TERMINATORS,
    ),
    split_sentences=split_sentences,
    split_clauses=_split_clauses,
    locate=_locate,
    flags=re.IGNORECASE,
)


def extract_findings(report: str) -> list[Finding]:
    """Findings an English radiology report states or negates, with side and lobe."""
    return _FINDING_RULES(normalize(report))


# Written for the conformance kit in the style of IU X-ray (radiographs, with its "XXXX"
# anonymisation gaps) and of COV-CTR's English reports (CT); not taken from either data set.
SAMPLE_REPORTS = (
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear, "
    "without focal consolidation, pleural effusion or pneumothorax.",
    "1. Stable cardiomegaly. 2. Mild atelectasis at the left lung base. XXXX sternotomy wires "
    "are intact. No acute bony abnormality.",
    "Thoracic symmetry, mediastinal shadow in the middle. Multiple patchy ground glass shadows "
    "are seen in the lower lobes of both lungs, with blurred edges. No enlarged lymph nodes.",
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
    extract_findings=extract_findings,
    sample_reports=SAMPLE_REPORTS,
)


@hookimpl
def m3fm_languages() -> list[LanguageSpec]:
    """The English language."""
    return [SPEC]
