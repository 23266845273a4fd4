"""The FHIR R4 transaction Bundle of a `m3fm run` result (DiagnosticReport, Observations, the
model's Device), read back through the fhir.resources R4B models; and the one code table both
clinical outputs use.  Results are built by hand, so no model is loaded."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from clinical_fixtures import ZH_REPORT
from clinical_fixtures import zh_result as clinical_result
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from pydicom.data import get_testdata_file

from m3fm.clinical import coding, output_path
from m3fm.clinical.fhir import diagnostic_report, write_fhir
from m3fm.clinical.identity import ModelIdentity
from m3fm.clinical.sr import dicom_headers
from m3fm.registry import get_registry

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
IDENTITY = ModelIdentity("test-model", "0.1.0", "cd" * 32)
SNOMED, PRIVATE = "http://snomed.info/sct", "urn:m3fm:codes"


def zh_result(source: Path) -> dict:
    return clinical_result(source, other_label="my_plugin_label", ood=True)


def read_back(path: Path) -> dict[str, list]:
    """The written Bundle validated by the R4B models, its resources by type."""
    text = path.read_text(encoding="utf-8")
    bundle = Bundle.model_validate(json.loads(text))
    assert bundle.type == "transaction"
    kinds = {"DiagnosticReport": DiagnosticReport, "Observation": Observation, "Device": Device}
    resources: dict[str, list] = {kind: [] for kind in kinds}
    for entry in json.loads(text)["entry"]:
        kind = entry["resource"]["resourceType"]
        kinds[kind].model_validate(entry["resource"])
        resources[kind].append({**entry["resource"], "fullUrl": entry["fullUrl"],
                                "request": entry["request"]})
    return resources


def coded(concept: dict) -> tuple[str, str]:
    (coding_,) = concept["coding"]
    return coding_["system"], coding_["code"]


def test_a_dicom_input_gets_a_preliminary_report_on_its_study(tmp_path):
    path = write_fhir(zh_result(CT_SMALL), dicom_headers(CT_SMALL), IDENTITY, tmp_path)
    assert path == output_path(tmp_path, CT_SMALL, ".fhir.json")
    assert ZH_REPORT in path.read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    (report,) = read_back(path)["DiagnosticReport"]
    header = dicom_headers(CT_SMALL)[0]
    assert report["status"] == "preliminary"
    assert coded(report["code"]) == ("http://loinc.org", "18748-4")
    assert report["conclusion"] == ZH_REPORT
    (form,) = report["presentedForm"]
    assert form["language"] == "zh" and base64.b64decode(form["data"]).decode() == ZH_REPORT
    assert report["imagingStudy"] == [{"type": "ImagingStudy", "identifier": {
        "system": "urn:dicom:uid", "value": f"urn:oid:{header.StudyInstanceUID}"}}]
    assert report["subject"]["identifier"] == {"value": header.PatientID}
    assert "not for diagnostic use" in report["text"]["div"]


def test_findings_and_probabilities_are_coded_observations_by_the_model(tmp_path):
    resources = read_back(write_fhir(zh_result(CT_SMALL), dicom_headers(CT_SMALL), IDENTITY,
                                     tmp_path))
    (report,) = resources["DiagnosticReport"]
    (device,) = resources["Device"]
    observations = {(*coded(item["code"]), item.get("method", {}).get("coding", [{}])[0]
                     .get("code", "")): item for item in resources["Observation"]}
    assert {ref["reference"] for ref in report["result"]} == {
        item["fullUrl"] for item in resources["Observation"]}
    assert {item["device"]["reference"] for item in resources["Observation"]} == {
        device["fullUrl"]}
    assert all(item["status"] == "preliminary" and "AI-generated" in item["note"][0]["text"]
               for item in resources["Observation"])

    effusion = observations[(SNOMED, "60046008", "report-finding")]
    assert coded(effusion["valueCodeableConcept"]) == (SNOMED, "272519000")  # Absent
    opacity = observations[("http://dicom.nema.org/resources/ontology/DCM", "112120",
                            "report-finding")]
    assert coded(opacity["valueCodeableConcept"]) == (SNOMED, "52101004")  # Present
    assert coded(opacity["bodySite"]) == (SNOMED, "90572001")
    assert opacity["bodySite"]["text"] == "right lower lobe of lung"
    (laterality,) = opacity["component"]
    assert coded(laterality["valueCodeableConcept"]) == (SNOMED, "24028007")  # Right

    covid = observations[(SNOMED, "840539006", "zero-shot-diagnosis")]
    assert covid["valueQuantity"] == {"value": 0.81, "unit": "probability",
                                      "system": "http://unitsofmeasure.org",
                                      "code": "{probability}"}
    assert len(covid["note"]) == 1
    unknown = observations[(PRIVATE, "my_plugin_label", "zero-shot-diagnosis")]
    assert unknown["note"][1]["text"] == ("scored with en prompts; unvalidated: the model's "
                                          "validation figures do not vouch for it")

    ood = observations[(PRIVATE, "ood", "")]
    assert coded(ood["valueCodeableConcept"]) == (SNOMED, "373066001")  # Yes
    assert [part["valueQuantity"]["value"] for part in ood["component"]] == [4.5, 3.2]


def test_the_device_is_the_checkpoint_created_once_per_fingerprint(tmp_path):
    bundle = diagnostic_report(zh_result(CT_SMALL), [], IDENTITY)
    (device,) = [entry for entry in bundle.entry if entry.resource.get_resource_type() == "Device"]
    assert device.resource.identifier[0].value == "cd" * 32
    assert device.resource.deviceName[0].name == "test-model"
    assert device.resource.version[0].value == "m3fm 0.1.0"
    assert device.request.ifNoneExist == f"identifier=urn:m3fm:model-sha256|{'cd' * 32}"


def test_a_non_dicom_input_gets_a_report_without_study_or_patient(tmp_path):
    result = zh_result(tmp_path / "slice.png")
    (report,) = read_back(write_fhir(result, [], IDENTITY, tmp_path))["DiagnosticReport"]
    assert "imagingStudy" not in report and "subject" not in report
    assert report["conclusion"] == ZH_REPORT


@pytest.mark.parametrize("drop", [("report",), ("diagnosis", "findings", "ood")])
def test_a_result_without_report_or_diagnosis_still_validates(tmp_path, drop):
    result = {key: value for key, value in zh_result(CT_SMALL).items() if key not in drop}
    resources = read_back(write_fhir(result, dicom_headers(CT_SMALL), IDENTITY, tmp_path))
    (report,) = resources["DiagnosticReport"]
    assert ("conclusion" in report) == ("report" in result)
    assert ("result" in report) == bool(resources["Observation"])
    assert "AI-generated" in report["text"]["div"] and resources["Device"]


def test_rewriting_replaces_the_file_and_leaves_no_partial_file(tmp_path):
    first = write_fhir(zh_result(CT_SMALL), [], IDENTITY, tmp_path)
    second = write_fhir(zh_result(CT_SMALL), [], IDENTITY, tmp_path)
    assert first == second and [path.name for path in tmp_path.iterdir()] == [first.name]


def test_every_installed_label_gets_one_code_of_its_own():
    registry = get_registry()
    labels = sorted({*registry.label_ids(), *registry.language("en").finding_names})
    concepts = {label: coding.finding(label) for label in labels}
    assert len({(c.scheme, c.value) for c in concepts.values()}) == len(labels)
    assert all(c.scheme in coding.SYSTEMS and 0 < len(c.meaning) <= 64
               for c in concepts.values())
    assert concepts["covid19"] == coding.Concept("840539006", "SCT", "COVID-19")
    assert concepts["crazy_paving"] == coding.Concept("crazy_paving", "99M3FM",
                                                      "crazy-paving pattern")


def test_labels_and_qualifiers_no_plugin_documents_get_private_codes():
    assert coding.finding("my_plugin_label") == coding.Concept(
        "my_plugin_label", "99M3FM", "my_plugin_label")
    assert coding.qualifier(coding.SIDES, "left") == coding.Concept("7771000", "SCT", "Left")
    assert coding.qualifier(coding.LOBES, "lingula").scheme == "99M3FM"
