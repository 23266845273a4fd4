"""The DICOM SR of a `m3fm run` result: filed with the source's study, carrying the report,
coded findings, probabilities, the model as observer and the AI statement; valid for dciodvfy.
Results are built by hand, so no model is loaded."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom.sr as hsr
import pydicom
import pytest
from clinical_fixtures import ZH_REPORT, write_series
from clinical_fixtures import zh_result as clinical_result
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage

from m3fm.clinical import output_path
from m3fm.clinical.identity import ModelIdentity, model_identity
from m3fm.clinical.sr import dicom_headers, structured_report, write_sr
from m3fm.models import default_model_dir
from m3fm.registry import InputError

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
IDENTITY = ModelIdentity("test-model", "0.1.0", "ab" * 32)


def zh_result(source: Path) -> dict:
    return clinical_result(source, other_label="crazy_paving", ood=False)


@pytest.fixture
def series(tmp_path) -> Path:
    return write_series(tmp_path / "series")


def items(content: Dataset) -> Iterator[Dataset]:
    """Every content item of an SR tree, depth first."""
    for item in content.get("ContentSequence", []):
        yield item
        yield from items(item)


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.get("CodeValue") or code.get("LongCodeValue")


def written(tmp_path: Path, result: dict, headers: list[Dataset]) -> Dataset:
    path = write_sr(result, headers, IDENTITY, tmp_path / "sr")
    assert path == output_path(tmp_path / "sr", Path(result["input"]), ".sr.dcm")
    return pydicom.dcmread(path)


def test_sr_of_a_dicom_file_is_filed_with_its_study_and_carries_the_result(tmp_path):
    source = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    sr = written(tmp_path, zh_result(CT_SMALL), dicom_headers(CT_SMALL))
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert (sr.StudyInstanceUID, sr.PatientID, sr.PatientName) == (
        source.StudyInstanceUID, source.PatientID, source.PatientName)
    assert (sr.PreliminaryFlag, sr.VerificationFlag) == ("PRELIMINARY", "UNVERIFIED")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    texts = {concept(item): item.TextValue for item in items(sr) if item.ValueType == "TEXT"}
    assert texts[("99M3FM", "report-text")] == ZH_REPORT
    assert "AI-generated" in texts[("99M3FM", "ai-statement")]
    assert "not for diagnostic use" in texts[("99M3FM", "ai-statement")]
    assert texts[("DCM", "121013")] == "test-model"  # Device Observer Name
    assert texts[("DCM", "121016")] == "ab" * 32  # Device Observer Serial Number
    assert [scheme.CodingSchemeDesignator
            for scheme in sr.CodingSchemeIdentificationSequence] == ["99M3FM"]


def test_sr_codes_findings_with_presence_laterality_and_lobe(tmp_path):
    sr = written(tmp_path, zh_result(CT_SMALL), dicom_headers(CT_SMALL))
    codes = {concept(item): item for item in items(sr) if item.ValueType == "CODE"}
    effusion = codes[("SCT", "60046008")]
    assert effusion.ConceptCodeSequence[0].CodeValue == "272519000"  # Absent
    opacity = codes[("DCM", "112120")]
    assert opacity.ConceptCodeSequence[0].CodeValue == "52101004"  # Present
    modifiers = {concept(item): item.ConceptCodeSequence[0].CodeValue
                 for item in opacity.ContentSequence}
    assert modifiers == {("SCT", "272741003"): "24028007",  # Laterality: Right
                         ("SCT", "363698007"): "90572001"}  # Finding Site: Lower lobe of lung
    assert codes[("99M3FM", "ood")].ConceptCodeSequence[0].CodeValue == "373067005"  # No


def test_sr_carries_each_probability_and_notes_unvalidated_labels(tmp_path):
    sr = written(tmp_path, zh_result(CT_SMALL), dicom_headers(CT_SMALL))
    numbers = {concept(item): item.MeasuredValueSequence[0] for item in items(sr)
               if item.ValueType == "NUM"}
    assert float(numbers[("SCT", "840539006")].NumericValue) == pytest.approx(0.81)
    assert float(numbers[("99M3FM", "crazy_paving")].NumericValue) == pytest.approx(0.25)
    unit = numbers[("SCT", "840539006")].MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", "{probability}")
    assert float(numbers[("99M3FM", "ood-score")].NumericValue) == pytest.approx(1.7)
    comments = [item.TextValue for item in items(sr) if concept(item) == ("DCM", "121106")]
    assert comments == ["crazy_paving: scored with en prompts; unvalidated: the model's "
                        "validation figures do not vouch for it"]


def test_highdicom_reads_the_sr_back(tmp_path):
    path = write_sr(zh_result(CT_SMALL), dicom_headers(CT_SMALL), IDENTITY, tmp_path)
    document = hsr.srread(path)
    assert isinstance(document, hsr.ComprehensiveSR)
    languages = [item for item in items(document) if concept(item) == ("DCM", "121049")]
    assert [item.ConceptCodeSequence[0].CodeValue for item in languages] == ["en", "zh"]


def test_sr_of_a_series_references_every_slice(tmp_path, series):
    headers = dicom_headers(series)
    assert len(headers) == 3
    sr = written(tmp_path, zh_result(series), headers)
    referenced = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [entry.SeriesInstanceUID for entry in referenced] == [headers[0].SeriesInstanceUID]
    assert ({entry.ReferencedSOPInstanceUID for entry in referenced[0].ReferencedSOPSequence}
            == {header.SOPInstanceUID for header in headers})


def test_sr_without_report_diagnosis_or_findings_still_says_what_made_it(tmp_path):
    result = {"input": str(CT_SMALL), "modality": "ct", "language": "en"}
    sr = written(tmp_path, result, dicom_headers(CT_SMALL))
    found = {concept(item) for item in items(sr)}
    assert ("99M3FM", "ai-statement") in found
    assert not found & {("99M3FM", "report-text"), ("DCM", "121070"),
                        ("99M3FM", "zero-shot-diagnosis"), ("99M3FM", "ood")}


def bare_header() -> Dataset:
    """CT_small's header without any attribute a DICOM instance may lack."""
    header = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    for keyword in ("SeriesNumber", "PatientName", "StudyID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName",
                    "PatientID", "SpecificCharacterSet", "PatientWeight"):
        if keyword in header:
            delattr(header, keyword)
    return header


def test_sr_is_written_for_headers_lacking_optional_attributes(tmp_path):
    header = bare_header()
    sr = written(tmp_path, zh_result(CT_SMALL), [header])
    assert sr.StudyInstanceUID == header.StudyInstanceUID and sr.PatientID == ""
    assert next(item.TextValue for item in items(sr)
                if concept(item) == ("99M3FM", "report-text")) == ZH_REPORT


def test_rewriting_replaces_the_file_and_leaves_no_partial_file(tmp_path):
    first = write_sr(zh_result(CT_SMALL), dicom_headers(CT_SMALL), IDENTITY, tmp_path)
    second = write_sr(zh_result(CT_SMALL), dicom_headers(CT_SMALL), IDENTITY, tmp_path)
    assert first == second and [path.name for path in tmp_path.iterdir()] == [first.name]


def test_dicom_headers_of_non_dicom_inputs_are_empty(tmp_path, series):
    picture = tmp_path / "slice.png"
    Image.new("L", (8, 8)).save(picture)
    fake = tmp_path / "fake.dcm"
    fake.write_text("not DICOM")
    assert dicom_headers(picture) == []
    assert dicom_headers(fake) == []
    assert dicom_headers(tmp_path / "missing.dcm") == []
    shutil.copy(fake, series / "notes.dcm")
    assert len(dicom_headers(series)) == 3


def test_an_sr_needs_dicom_headers(tmp_path):
    with pytest.raises(InputError, match="not DICOM"):
        structured_report(zh_result(tmp_path / "slice.png"), [], IDENTITY)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not found")
def test_dciodvfy_finds_no_errors(tmp_path, series):
    for source, headers in ((CT_SMALL, dicom_headers(CT_SMALL)), (series, dicom_headers(series)),
                            (CT_SMALL, [bare_header()])):
        path = write_sr(zh_result(source), headers, IDENTITY, tmp_path)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                                 check=False)
        lines = (checked.stdout + checked.stderr).splitlines()
        assert not [line for line in lines if line.startswith("Error")], lines


def test_model_identity_names_the_recipe_and_fingerprints_the_weights(tmp_path):
    bundled = model_identity(default_model_dir())
    assert bundled.name == "m3fm-small" and len(bundled.fingerprint) == 64
    model = tmp_path / "final"
    (model / "align").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "align" / "model.safetensors").write_bytes(b"aligner")
    first = model_identity(model)
    assert first.name == "final"  # no metadata.json: the folder's name
    (model / "align" / "model.safetensors").write_bytes(b"aligner2")
    assert model_identity(model).fingerprint != first.fingerprint
    (model / "align" / "model.safetensors").unlink()
    (model / "model.safetensors").write_bytes(b"weightsaligner")
    assert model_identity(model).fingerprint != first.fingerprint


def test_model_identity_needs_weight_files(tmp_path):
    with pytest.raises(InputError, match="weight files to identify"):
        model_identity(tmp_path)
