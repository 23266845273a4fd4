"""The vocabulary of the DICOM SR and the FHIR report: one table of codes, and the sentences both
state, so that the two files of an input always code and qualify a finding alike.

Standard codes come first: SNOMED CT (``SCT``, http://snomed.info/sct), DICOM (``DCM``,
PS3.16's own codes, such as the Chest CAD findings), LOINC (``LN``) and UCUM units.  Each code
here was checked against pydicom's copy of the PS3.16 code tables or against several
independent public code lists; nothing is guessed.

Concepts with no such code use the private scheme :data:`PRIVATE_SCHEME` (``99M3FM``; in
FHIR the system :data:`PRIVATE_SYSTEM`, ``urn:m3fm:codes``).  Its code values are

* a label id (such as ``crazy_paving``) for a finding or diagnosis label without a standard
  code, meaning the label's English finding name (the label id when no plugin names it), so
  labels that third-party plugins add are coded too;
* ``report-text``: the report text the model generated;
* ``ai-statement``: the statement that the content is AI-generated and unverified;
* ``report-finding``: (FHIR method) a finding the generated report states or negates, as the
  language plugin's extractor reads it;
* ``zero-shot-diagnosis``: the model's probabilities that each label is present (image-text
  similarity against the language plugins' prompts);
* ``ood``, ``ood-score``, ``ood-threshold``: whether the input lies outside the training
  data, with the score and the threshold that decided it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from m3fm.clinical.identity import ModelIdentity
from m3fm.registry import M3fmError, get_registry

PRIVATE_SCHEME = "99M3FM"
"""DICOM coding scheme designator of the private codes (``99`` marks a private scheme)."""
PRIVATE_SCHEME_NAME = "m3fm codes"
PRIVATE_SYSTEM = "urn:m3fm:codes"
"""FHIR code system URI of the private codes."""

SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "LN": "http://loinc.org",
    "UCUM": "http://unitsofmeasure.org",
    PRIVATE_SCHEME: PRIVATE_SYSTEM,
}
"""FHIR code system URI of each DICOM coding scheme designator used here."""


@dataclass(frozen=True)
class Concept:
    """A coded concept: code value, DICOM coding scheme designator, and meaning."""

    value: str
    scheme: str
    meaning: str

    @property
    def system(self) -> str:
        """The FHIR code system URI of the scheme."""
        return SYSTEMS[self.scheme]


def _private(value: str, meaning: str) -> Concept:
    # CodeMeaning is a DICOM LO: at most 64 characters.
    return Concept(value, PRIVATE_SCHEME, meaning[:64])


FINDINGS = {
    "atelectasis": Concept("46621007", "SCT", "Atelectasis"),
    "cardiomegaly": Concept("8186001", "SCT", "Cardiomegaly"),
    "effusion": Concept("60046008", "SCT", "Pleural effusion"),
    "infiltration": Concept("112121", "DCM", "Infiltrate"),
    "mass": Concept("4147007", "SCT", "Mass"),
    "nodule": Concept("27925004", "SCT", "Nodule"),
    "pneumonia": Concept("233604007", "SCT", "Pneumonia"),
    "pneumothorax": Concept("36118008", "SCT", "Pneumothorax"),
    "consolidation": Concept("95436008", "SCT", "Lung consolidation"),
    "edema": Concept("19242006", "SCT", "Pulmonary edema"),
    "emphysema": Concept("87433001", "SCT", "Pulmonary emphysema"),
    "fibrosis": Concept("112674009", "SCT", "Fibrosis"),
    "hernia": Concept("84089009", "SCT", "Hiatal hernia"),
    "covid19": Concept("840539006", "SCT", "COVID-19"),
    "ground_glass_opacity": Concept("112120", "DCM", "Ground glass opacity"),
    "lymphadenopathy": Concept("30746006", "SCT", "Lymphadenopathy"),
    "reticulation": Concept("112113", "DCM", "Reticular pattern"),
    "air_bronchogram": Concept("112071", "DCM", "Air bronchogram"),
    "bronchiectasis": Concept("12295008", "SCT", "Bronchiectasis"),
    "calcification": Concept("18115005", "SCT", "Pathologic calcification"),
    "subpleural_line": Concept("112115", "DCM", "Subpleural line"),
    "tree_in_bud": Concept("112127", "DCM", "Tree-in-bud sign"),
    "pericardial_effusion": Concept("373945007", "SCT", "Pericardial effusion"),
}
"""Label id → standard code.  Labels missing here (pleural_thickening, patchy_opacity,
linear_opacity, cavity, crazy_paving, vascular_enlargement, and any a plugin adds) get a
private code from :func:`finding`."""

PRESENT = Concept("52101004", "SCT", "Present")
ABSENT = Concept("272519000", "SCT", "Absent")
YES = Concept("373066001", "SCT", "Yes")
NO = Concept("373067005", "SCT", "No")
LATERALITY = Concept("272741003", "SCT", "Laterality")
SIDES = {
    "left": Concept("7771000", "SCT", "Left"),
    "right": Concept("24028007", "SCT", "Right"),
    "both": Concept("51440002", "SCT", "Bilateral"),
}
FINDING_SITE = Concept("363698007", "SCT", "Finding Site")
LUNG = Concept("39607008", "SCT", "Lung")
LOBES = {
    "upper": Concept("45653009", "SCT", "Upper lobe of lung"),
    "middle": Concept("72481006", "SCT", "Middle lobe of right lung"),
    "lower": Concept("90572001", "SCT", "Lower lobe of lung"),
}
DOCUMENT_TITLE = Concept("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS_SECTION = Concept("121070", "DCM", "Findings")
COMMENT = Concept("121106", "DCM", "Comment")
PROBABILITY_UNIT = Concept("{probability}", "UCUM", "probability")
NO_UNITS = Concept("1", "UCUM", "no units")

REPORT_TEXT = _private("report-text", "AI-generated report text")
AI_STATEMENT = _private("ai-statement", "AI-generated content statement")
REPORT_FINDING = _private("report-finding", "Stated by the AI-generated report")
ZERO_SHOT_DIAGNOSIS = _private("zero-shot-diagnosis", "Zero-shot diagnosis probability")
OOD = _private("ood", "Input out of training distribution")
OOD_SCORE = _private("ood-score", "Out-of-distribution score")
OOD_THRESHOLD = _private("ood-threshold", "Out-of-distribution threshold")
OOD_NUMBERS = ((OOD_SCORE, "ood_score"), (OOD_THRESHOLD, "ood_threshold"))
"""The numbers behind the out-of-distribution flag: concept, and key in a result."""


def finding(label: str) -> Concept:
    """The code of a finding or diagnosis label: standard where one exists, else private."""
    if label in FINDINGS:
        return FINDINGS[label]
    return _private(label, _english_names().get(label, label))


def qualifier(table: dict[str, Concept], value: str) -> Concept:
    """`value`'s code in a side or lobe table; a value no plugin documents is kept, privately."""
    return table.get(value) or _private(value, value)


def ai_statement(identity: ModelIdentity) -> str:
    """What both outputs state about their content, so that no reader takes it for a
    physician's report."""
    return (f"AI-generated by the model {identity.name} (m3fm {identity.version}); not "
            "verified by a physician; not for diagnostic use.")


def label_note(result: Mapping[str, Any], label: str) -> str | None:
    """What a reader must know about a label's probability, as `m3fm run` prints it: prompts
    of another language than the report's, and probabilities no validation vouches for."""
    notes = []
    prompts = result.get("prompt_languages", {}).get(label, result.get("language"))
    if prompts != result.get("language"):
        notes.append(f"scored with {prompts} prompts")
    if label in result.get("unvalidated", ()):
        notes.append("unvalidated: the model's validation figures do not vouch for it")
    return "; ".join(notes) or None


def _english_names() -> dict[str, str]:
    """Label id → English finding name, from the installed plugins (empty without English)."""
    try:
        return dict(get_registry().language("en").finding_names)
    except M3fmError:
        return {}
