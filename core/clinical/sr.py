"""DICOM Structured Report of one `m3fm run` result, filed with the study it was read from.

The SR is a Comprehensive SR.  The content needs TEXT, CODE, NUM and CONTAINER items, which
rules out Basic Text SR (no NUM), and no 3D coordinates, so Comprehensive 3D SR adds nothing.
Enhanced SR could hold the same tree, but Comprehensive SR is the more widely supported class
(TID 1500 measurement reports use it) and would also allow by-reference relationships, e.g. to
regions added later.  TID 1500 has no place for free report text, so the tree is built from
content items:

* root CONTAINER "Diagnostic Imaging Report" (LN 18748-4), language English (the code meanings
  and the statement), observer: the model as a Device (name, m3fm version as model name,
  weight fingerprint as serial number);
* TEXT: the statement that the content is AI-generated, unverified, not for diagnostic use;
* TEXT: the report, with its own language;
* CONTAINER Findings: per finding the report states, CODE finding = Present/Absent, modified by
  Laterality and Finding Site (lobe);
* CONTAINER zero-shot diagnosis: per label a NUM probability, and a TEXT comment for a label
  whose probability needs one (other-language prompts, unvalidated);
* CODE out-of-distribution = Yes/No, with the score and threshold.

Patient, study and evidence (every source instance) come from the source's DICOM headers, so an
archive files the SR with the images it describes.  The flags say PRELIMINARY and UNVERIFIED.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom.sr as hsr
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from m3fm.clinical import coding, output_path
from m3fm.clinical.identity import ModelIdentity
from m3fm.registry import InputError, M3fmError, get_registry

__all__ = ["dicom_headers", "structured_report", "write_sr"]

SERIES_NUMBER = 9901
"""Series number of the SR's own series: high, so that viewers list it after the images."""
_EVIDENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
_TYPE_2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
           "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
"""Patient and study attributes an SR must have, empty when the source lacks them."""


def dicom_headers(source: Path) -> list[Dataset]:
    """Headers (no pixels) of a DICOM file, or of each DICOM file of a series folder; [] for an
    input that is not DICOM (PNG, NIfTI, an unreadable file).  Files without the UIDs an SR
    references are left out, as is anything in a folder that is not a regular DICOM file."""
    source = Path(source)
    if source.is_dir():
        files = sorted(entry for entry in source.iterdir()
                       if not entry.name.startswith(".") and entry.is_file())
    else:
        files = [source]
    headers = []
    for file in files:
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:  # any unreadable file is simply not DICOM evidence
            continue
        if all(header.get(keyword) for keyword in _EVIDENCE_UIDS):
            headers.append(header)
    return headers


def structured_report(
    result: Mapping[str, Any], headers: Sequence[Dataset], identity: ModelIdentity
) -> Dataset:
    """The Comprehensive SR of `result`, in the study of `headers` (the source's DICOM
    headers); InputError when there are none, as an SR belongs to a DICOM study."""
    if not headers:
        raise InputError(f"{result['input']}: not DICOM, so no study to file a DICOM SR with")
    evidence = [_with_type_2(header) for header in headers]
    report = hsr.ComprehensiveSR(
        evidence=evidence,
        content=_content(result, identity),
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="m3fm",
        is_complete=True,
        series_description="m3fm AI report (unverified)",
        specific_character_set="ISO_IR 192",
    )
    report.CodingSchemeIdentificationSequence = [_private_scheme()]
    return report


def write_sr(
    result: Mapping[str, Any], headers: Sequence[Dataset], identity: ModelIdentity,
    out_dir: Path,
) -> Path:
    """Write the SR of `result` to ``output_path(out_dir, input, ".sr.dcm")``, atomically:
    readers see the old file or the new one, never part of one (an OSError leaves neither a
    partial file nor a changed old one)."""
    dataset = structured_report(result, headers, identity)
    target = output_path(Path(out_dir), Path(result["input"]), ".sr.dcm")
    partial = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, target)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return target


def _with_type_2(header: Dataset) -> Dataset:
    """A copy of `header` with every patient and study attribute the SR copies, empty where
    the source lacks it (highdicom reads each one)."""
    filled = copy.deepcopy(header)
    for keyword in _TYPE_2:
        if keyword not in filled:
            setattr(filled, keyword, None)
    return filled


def _code(concept: coding.Concept) -> hsr.CodedConcept:
    return hsr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def _private_scheme() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = coding.PRIVATE_SCHEME
    item.CodingSchemeName = coding.PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "m3fm developers"
    return item


def _language(code: str) -> hsr.LanguageOfContentItemAndDescendants:
    try:
        name = get_registry().language(code).name
    except M3fmError:
        name = code
    return hsr.LanguageOfContentItemAndDescendants(hsr.CodedConcept(code, "RFC5646", name))


def _content(result: Mapping[str, Any], identity: ModelIdentity) -> hsr.ContainerContentItem:
    device = hsr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[identity.fingerprint]),
        name=identity.name[:64],
        manufacturer_name="m3fm",
        model_name=f"m3fm {identity.version}"[:64],
        serial_number=identity.fingerprint,
    )
    items: list[hsr.ContentItem] = [*_language("en")]
    items += hsr.ObserverContext(codes.cid270.Device, device)
    items.append(hsr.TextContentItem(_code(coding.AI_STATEMENT), coding.ai_statement(identity),
                                     relationship_type="CONTAINS"))
    if "report" in result:
        text = hsr.TextContentItem(_code(coding.REPORT_TEXT), result["report"],
                                   relationship_type="CONTAINS")
        text.ContentSequence = hsr.ContentSequence(_language(result["language"]))
        items.append(text)
    if result.get("findings"):
        items.append(_container(coding.FINDINGS_SECTION,
                                [_finding(finding) for finding in result["findings"]]))
    if "diagnosis" in result:
        items.append(_container(coding.ZERO_SHOT_DIAGNOSIS, _probabilities(result)))
    if "ood" in result:
        items.append(_out_of_distribution(result))
    root = hsr.ContainerContentItem(_code(coding.DOCUMENT_TITLE))
    root.ContentSequence = hsr.ContentSequence(items)
    return root


def _container(concept: coding.Concept, items: list[hsr.ContentItem]) -> hsr.ContainerContentItem:
    container = hsr.ContainerContentItem(_code(concept), relationship_type="CONTAINS")
    container.ContentSequence = hsr.ContentSequence(items)
    return container


def _finding(finding: Mapping[str, Any]) -> hsr.CodeContentItem:
    item = hsr.CodeContentItem(
        _code(coding.finding(finding["label"])),
        _code(coding.PRESENT if finding["present"] else coding.ABSENT),
        relationship_type="CONTAINS",
    )
    modifiers = []
    if finding.get("side"):
        modifiers.append(hsr.CodeContentItem(
            _code(coding.LATERALITY), _code(coding.qualifier(coding.SIDES, finding["side"])),
            relationship_type="HAS CONCEPT MOD"))
    if finding.get("lobe"):
        modifiers.append(hsr.CodeContentItem(
            _code(coding.FINDING_SITE), _code(coding.qualifier(coding.LOBES, finding["lobe"])),
            relationship_type="HAS CONCEPT MOD"))
    if modifiers:
        item.ContentSequence = hsr.ContentSequence(modifiers)
    return item


def _probabilities(result: Mapping[str, Any]) -> list[hsr.ContentItem]:
    items: list[hsr.ContentItem] = []
    for label, probability in result["diagnosis"].items():
        items.append(hsr.NumContentItem(_code(coding.finding(label)), float(probability),
                                        _code(coding.PROBABILITY_UNIT),
                                        relationship_type="CONTAINS"))
        if note := coding.label_note(result, label):
            items.append(hsr.TextContentItem(_code(coding.COMMENT), f"{label}: {note}",
                                             relationship_type="CONTAINS"))
    return items


def _out_of_distribution(result: Mapping[str, Any]) -> hsr.CodeContentItem:
    item = hsr.CodeContentItem(_code(coding.OOD), _code(coding.YES if result["ood"] else coding.NO),
                               relationship_type="CONTAINS")
    properties = [
        hsr.NumContentItem(_code(concept), float(result[key]), _code(coding.NO_UNITS),
                           relationship_type="HAS PROPERTIES")
        for concept, key in coding.OOD_NUMBERS
        if result.get(key) is not None
    ]
    if properties:
        item.ContentSequence = hsr.ContentSequence(properties)
    return item
