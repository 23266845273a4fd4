"""Spanish finding extraction: which findings a report states or denies, and where.

Built on :class:`m3fm.findings.FindingRules`, which applies the rules the same way in every
language; what is Spanish is here: the terms naming each finding (label ids shared with the
English extractor, so that a Spanish report can be scored against English references), the
negation cues, and how sides and lobes are written.  The terms follow the vocabulary of the
clause table (``data/terms.tsv``): "opacidad" renders COV-CTR's "shadow" and names no finding by
itself, as "shadow" does not in English.
"""

from __future__ import annotations

import re

from m3fm.findings import FindingRules, Location, Negation
from m3fm.registry import Finding

from .text import normalize, split_sentences

_OPACITY = r"(?:opacidad(?:es)?|im[áa]gen(?:es)?|sombras?)"
_SHAPE = r"(?:(?:parchead[oa]s?|laminar(?:es)?|nodular(?:es)?|tenues?|dens[oa]s?|pequeñ[oa]s?)\s+)"
_FLUID = r"\b(?:hipodens\w*|l[íi]quid\w*)"
_PLEURAL_SPACE = r"\b(?:cavidad(?:es)?\s+pleural(?:es)?|hemit[óo]rax)\b"

_TERMS = {
    "ground_glass_opacity": (
        rf"(?:{_OPACITY}\s+{_SHAPE}*(?:en\s+)?|halo\s+en\s+)?vidrio\s+(?:esmerilado|deslustrado)"
    ),
    "consolidation": r"\bconsolidaci(?:ones|[óo]n)(?:\s+(?:parcheadas?|lineal(?:es)?))?",
    "patchy_opacity": rf"\bparche(?:s|ad[oa]s?)?\b|\b{_OPACITY}\s+{_SHAPE}*(?:parchead|laminar)\w*",
    "reticulation": (
        r"\b(?:patr[óo]n\s+)?reticular(?:es)?\b|\bengrosamiento\s+(?:septal|intersticial)"
    ),
    "linear_opacity": rf"\b{_OPACITY}\s+(?:\w+\s+)?lineal(?:es)?\b|\bestr[íi]as?\b",
    "nodule": rf"\bn[óo]dul(?:o|os|ar|ares)\b|\bgranulomas?\b|\b{_OPACITY}\s+nodular(?:es)?",
    "mass": r"\bmasas?\b",
    "lymphadenopathy": (
        r"\badenopat[íi]as?\b"
        r"|\bganglios?\s+(?:linf[áa]ticos?\s+)?(?:\w+\s+)?(?:aumentados|agrandados)"
    ),
    "effusion": (
        r"\bderrames?(?:\s+pleural(?:es)?)?\b(?!\s+peric)|\bhidrot[óo]rax\b"
        rf"|{_FLUID}[^,;]{{0,40}}?{_PLEURAL_SPACE}|{_PLEURAL_SPACE}[^,;]{{0,40}}?{_FLUID}"
    ),
    "pericardial_effusion": (
        r"\bderrames?\s+peric[áa]rdic\w*"
        rf"|{_FLUID}[^,;]{{0,40}}?\bperic[áa]rd\w*|\bperic[áa]rd\w*[^,;]{{0,40}}?{_FLUID}"
    ),
    "pneumothorax": r"\bneumot[óo]rax\b",
    "pleural_thickening": (
        r"\bpleura\w*\b[^,;]{0,30}?\bengros\w*|\bengros\w*[^,;]{0,30}?\bpleura\w*"
    ),
    "atelectasis": r"\batelectasi\w*|\bcolaps\w*|\bcomprimid[oa]s?\b",
    "air_bronchogram": r"\bbroncogramas?(?:\s+a[ée]reos?)?",
    "cavity": (
        r"\bcavidad(?:es)?\b(?!\s+(?:pleural|peric[áa]rdic|tor[áa]cic|abdominal|oral))"
        r"|\bcavitad\w*|\bcavitaci\w*"
    ),
    "bronchiectasis": (
        r"\bbronquiectasi\w*|\bcalibre\s+de\s+los\s+bronquios[^,;]{0,60}?aumentado"
        r"|\bbronquios?\b[^,;]{0,60}?\bdilatad\w*"
    ),
    "calcification": r"\bcalcific\w*",
    "crazy_paving": r"\bempedrado\b",
    "subpleural_line": r"\bl[íi]neas?\s+subpleural(?:es)?\b",
    "tree_in_bud": r"\b[áa]rbol\s+en\s+brote\b",
    "vascular_enlargement": (
        r"\bvasos?\s+(?:sangu[íi]neos?\s+)?(?:engrosados|dilatados|aumentados)\b"
        r"|\bengrosamiento\s+vascular\b"
    ),
    "emphysema": r"\benfisema\w*|\bbullas?\b",
    "fibrosis": r"\bfibros\w+|\bfibr[óo]tic\w*|\bpanal\b|\bcicatri\w*",
    "edema": r"\bedema\b",
    "pneumonia": r"\bneumon(?:[íi]a|itis)\b",
    "cardiomegaly": r"\bcardiomegalia\b|\bsilueta\s+card\w*\s+(?:\w+\s+)?aumentada\b",
}

_NEGATION = Negation(
    before=re.compile(r"\b(?:no|sin|ni|ausencia\s+de|libre\s+de|negativ[oa]\s+para)\b",
                      re.IGNORECASE),
    after=re.compile(r"\b(?:(?:ha|han)\s+desaparecido|(?:est[áa]n?|estaba[n]?)\s+ausentes?)\b",
                     re.IGNORECASE),
    pseudo=re.compile(r"\bsin\s+cambios\b|\bno\s+se\s+descarta\w*|\bno\s+se\s+excluye\w*",
                      re.IGNORECASE),
    terminators=re.compile(r"\b(?:pero|aunque|sin\s+embargo)\b", re.IGNORECASE),
)

_SIDE = r"(?:derech[oa]s?|izquierd[oa]s?)"
_LOBE = r"(?:superior|medio|inferior)(?:es)?"
_PLACE = re.compile(
    rf"\bl[óo]bulos?\s+(?P<lobes>{_LOBE}(?:\s+(?:e|y)\s+{_LOBE})?)"
    rf"(?:\s+(?:de|del)\s+(?:(?:los|las)\s+)?(?:pulm[óo]n\s+(?P<side_of>{_SIDE})|"
    r"(?P<both_of>ambos\s+pulmones)))?"
    r"|\b(?P<lingula>l[íi]ngula)\b"
    rf"|\b(?:pulm[óo]n|pleura|cavidad\s+pleural|hemit[óo]rax|hilio|costilla)\s+(?P<side>{_SIDE})"
    r"|\b(?P<both>ambos\s+pulmones|ambas\s+cavidades\s+pleurales|ambos\s+lados|bilateral(?:es)?)"
    r"\b|\b(?P<mediastinum>mediast[íi]n\w*)\b",
    re.IGNORECASE,
)
_LOBE_WORD = re.compile(r"superior|medio|inferior", re.IGNORECASE)
_LOBE_NAMES = {"superior": "upper", "medio": "middle", "inferior": "lower"}


def _side(word: str | None) -> str | None:
    if not word:
        return None
    return "right" if word.lower().startswith("derech") else "left"


def _locate(clause: str) -> list[Location]:
    """Sides and lobes a clause names, in text order (mediastinum: a place without either)."""
    places: list[Location] = []
    for match in _PLACE.finditer(clause):
        groups = {name: value for name, value in match.groupdict().items() if value}
        if "lobes" in groups:
            side = "both" if "both_of" in groups else _side(groups.get("side_of"))
            places += [(side, _LOBE_NAMES[lobe.lower()])
                       for lobe in _LOBE_WORD.findall(groups["lobes"])]
        elif "lingula" in groups:
            places.append(("left", "upper"))
        elif "side" in groups:
            places.append((_side(groups["side"]), None))
        elif "both" in groups:
            places.append(("both", None))
        else:
            places.append((None, None))
    return list(dict.fromkeys(places))


def _split_clauses(sentence: str) -> list[str]:
    """Split at ";", at commas, and at "y" before a new verb ("… era nítida y se observaron …").

    A comma continues the clause when the segment after it has no verb, names places and
    no finding: the rest of a list of places ("… en el lóbulo medio del pulmón derecho, la
    língula del pulmón izquierdo y …").
    """
    clauses: list[str] = []
    for part in sentence.split(";"):
        for index, segment in enumerate(part.split(",")):
            pieces = [piece.strip() for piece in _AND_NEW_CLAUSE.split(segment)]
            if clauses and index > 0 and _continues(pieces[0]):
                clauses[-1] += ", " + pieces.pop(0)
            clauses += pieces
    return [clause for clause in clauses if clause]


def _continues(segment: str) -> bool:
    return bool(not _VERB.search(segment) and _PLACE.search(segment)
                and not _RULES.find_terms(segment))


_VERB = re.compile(
    r"\b(?:se\s+(?:observ|ve|aprecia|identific|detect)\w*|hab[íi]a|hay|est(?:á|aba)n?|era|eran"
    r"|es|son|mostraba\w*|presenta\w*|contactaba|predomina\w*)\b",
    re.IGNORECASE,
)
# "y" where the words after it, up to the next "y" or comma, hold a verb: a new clause.
_AND_NEW_CLAUSE = re.compile(rf"\s+y\s+(?=(?:(?!\s+y\s)[^,;])*?{_VERB.pattern})",
                             re.IGNORECASE)


_RULES = FindingRules(
    terms=_TERMS,
    negation=_NEGATION,
    split_sentences=split_sentences,
    split_clauses=_split_clauses,
    locate=_locate,
    flags=re.IGNORECASE,
)


def extract_findings(report: str) -> list[Finding]:
    """Findings a Spanish radiology report states or denies, with side and lobe."""
    return _RULES(normalize(report))
