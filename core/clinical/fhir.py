"""FHIR R4 DiagnosticReport of one `m3fm run` result, with its Observations and the model's
Device, as a transaction Bundle.

FHIR R4: fhir.resources 8 models R5 by default, so this uses its ``R4B`` package (FHIR 4.3).
R4B changed nothing in the resources written here: DiagnosticReport, Observation and Device
have the same elements, types and cardinalities as in R4 (4.0.1), so the JSON is valid R4.

Why a transaction Bundle rather than a DiagnosticReport with contained resources: in R4 no
element of a DiagnosticReport can reference a Device, so a contained Device would go
unreferenced (breaking invariant dom-3) in a report without Observations; and the Device is
not part of one report but the same for every report of a checkpoint.  One POST of the Bundle
to a server's base creates the report and its Observations (searchable by code) and creates the
Device only if none carries its weight fingerprint yet (``ifNoneExist``).

The imaging study is referenced by its DICOM Study Instance UID (identifier ``urn:dicom:uid``,
``urn:oid:UID``) and the patient by the DICOM Patient ID, since the server holding them
gives them ids this file cannot know.  A non-DICOM input has neither.
"""

from __future__ import annotations

import html
import uuid
from base64 import b64encode
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydicom.dataset import Dataset

from m3fm.checkpoint import atomic_write_text
from m3fm.clinical import coding, output_path
from m3fm.clinical.identity import ModelIdentity

__all__ = ["diagnostic_report", "write_fhir"]

FINGERPRINT_SYSTEM = "urn:m3fm:model-sha256"
"""Identifier system of a model Device: the sha256 fingerprint of its weights."""
_RADIOLOGY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
              "display": "Radiology"}
_IMAGING = {"system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "imaging", "display": "Imaging"}
_STUDY_CODE = {"system": "http://loinc.org", "code": "18748-4",
               "display": "Diagnostic imaging study"}


def diagnostic_report(
    result: Mapping[str, Any], headers: Sequence[Dataset], identity: ModelIdentity
) -> Bundle:
    """The transaction Bundle of `result`: DiagnosticReport, Observations and Device;
    `headers` (the source's DICOM headers, [] for another input) give study and patient."""
    statement = coding.ai_statement(identity)
    device = _entry(_device(identity), "Device",
                    if_none_exist=f"identifier={FINGERPRINT_SYSTEM}|{identity.fingerprint}")
    context = {"status": "preliminary", "category": [{"coding": [_IMAGING]}],
               "device": {"reference": device["fullUrl"]},
               "note": [{"text": statement}], **_subject(headers)}
    observations = [
        *(_finding(finding, context) for finding in result.get("findings", ())),
        *(_probability(result, label, p, context)
          for label, p in result.get("diagnosis", {}).items()),
        *([_out_of_distribution(result, context)] if "ood" in result else []),
    ]
    entries = [_entry(observation, "Observation") for observation in observations]
    report = _entry(_report(result, headers, statement, entries), "DiagnosticReport")
    return Bundle.model_validate(
        {"resourceType": "Bundle", "type": "transaction", "entry": [report, *entries, device]})


def write_fhir(
    result: Mapping[str, Any], headers: Sequence[Dataset], identity: ModelIdentity,
    out_dir: Path,
) -> Path:
    """Write the Bundle of `result` to ``output_path(out_dir, input, ".fhir.json")``,
    atomically: readers see the old file or the new one, never part of one (an OSError leaves
    neither a partial file nor a changed old one)."""
    bundle = diagnostic_report(result, headers, identity)
    target = output_path(Path(out_dir), Path(result["input"]), ".fhir.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_text(target, bundle.model_dump_json(indent=2) + "\n")
    except OSError:
        target.with_name(f".{target.name}.partial").unlink(missing_ok=True)
        raise
    return target


def _entry(resource: dict[str, Any], kind: str, if_none_exist: str | None = None) -> dict:
    request = {"method": "POST", "url": kind}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": kind, **resource},
            "request": request}


def _coding(concept: coding.Concept) -> dict[str, str]:
    return {"system": concept.system, "code": concept.value, "display": concept.meaning}


def _concept(concept: coding.Concept) -> dict[str, Any]:
    return {"coding": [_coding(concept)]}


def _subject(headers: Sequence[Dataset]) -> dict[str, Any]:
    """The patient, by the source's Patient ID (and name, for people), when it has one."""
    patient_id = str(headers[0].get("PatientID") or "") if headers else ""
    if not patient_id:
        return {}
    subject: dict[str, Any] = {"type": "Patient", "identifier": {"value": patient_id}}
    if name := str(headers[0].get("PatientName") or ""):
        subject["display"] = name
    return {"subject": subject}


def _report(result: Mapping[str, Any], headers: Sequence[Dataset], statement: str,
            observations: list[dict]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "text": {"status": "additional", "div": _narrative(statement, result.get("report"))},
        "status": "preliminary",
        "category": [{"coding": [_RADIOLOGY]}],
        "code": {"coding": [_STUDY_CODE]},
        **_subject(headers),
        "issued": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    studies = dict.fromkeys(str(header.StudyInstanceUID) for header in headers)
    if studies:
        report["imagingStudy"] = [
            {"type": "ImagingStudy",
             "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}}
            for study in studies]
    if observations:
        report["result"] = [{"reference": entry["fullUrl"]} for entry in observations]
    if "report" in result:
        report["conclusion"] = result["report"]
        report["presentedForm"] = [{
            "contentType": "text/plain; charset=utf-8",
            "language": result["language"],
            "data": b64encode(result["report"].encode()).decode("ascii"),
            "title": "AI-generated report (unverified)",
        }]
    return report


def _narrative(statement: str, report: str | None) -> str:
    paragraphs = [f"<p><b>{html.escape(statement)}</b></p>"]
    if report is not None:
        paragraphs.append(f"<p>{html.escape(report)}</p>")
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{"".join(paragraphs)}</div>'


def _device(identity: ModelIdentity) -> dict[str, Any]:
    return {
        "identifier": [{"system": FINGERPRINT_SYSTEM, "value": identity.fingerprint}],
        "status": "active",
        "manufacturer": "m3fm",
        "deviceName": [{"name": identity.name, "type": "model-name"}],
        "serialNumber": identity.fingerprint,
        "type": {"text": "AI report-generation and diagnosis model"},
        "version": [{"value": f"m3fm {identity.version}"}],
    }


def _finding(finding: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    observation = {
        **context,
        "code": _concept(coding.finding(finding["label"])),
        "method": _concept(coding.REPORT_FINDING),
        "valueCodeableConcept": _concept(coding.PRESENT if finding["present"] else coding.ABSENT),
    }
    side, lobe = finding.get("side"), finding.get("lobe")
    if side or lobe:
        site = coding.qualifier(coding.LOBES, lobe) if lobe else coding.LUNG
        words = [{"both": "bilateral"}.get(side, side), lobe and f"{lobe} lobe of", "lung"]
        observation["bodySite"] = {**_concept(site), "text": " ".join(w for w in words if w)}
    if side:
        observation["component"] = [{
            "code": _concept(coding.LATERALITY),
            "valueCodeableConcept": _concept(coding.qualifier(coding.SIDES, side)),
        }]
    return observation


def _probability(result: Mapping[str, Any], label: str, probability: float,
                 context: Mapping[str, Any]) -> dict[str, Any]:
    observation = {
        **context,
        "code": _concept(coding.finding(label)),
        "method": _concept(coding.ZERO_SHOT_DIAGNOSIS),
        "valueQuantity": _quantity(probability, coding.PROBABILITY_UNIT),
    }
    if note := coding.label_note(result, label):
        observation["note"] = [*context["note"], {"text": note}]
    return observation


def _out_of_distribution(result: Mapping[str, Any],
                         context: Mapping[str, Any]) -> dict[str, Any]:
    observation = {
        **context,
        "code": _concept(coding.OOD),
        "valueCodeableConcept": _concept(coding.YES if result["ood"] else coding.NO),
    }
    components = [
        {"code": _concept(concept), "valueQuantity": _quantity(result[key], coding.NO_UNITS)}
        for concept, key in coding.OOD_NUMBERS
        if result.get(key) is not None
    ]
    if components:
        observation["component"] = components
    return observation


def _quantity(value: float, unit: coding.Concept) -> dict[str, Any]:
    return {"value": float(value), "unit": unit.meaning, "system": unit.system,
            "code": unit.value}
