"""`m3fm run --sr/--fhir/--heatmaps` with the bundled model: files per input, named in the
results, a note for what an input cannot have, and bad folders refused before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from clinical_fixtures import write_series
from conftest import REPO, run_cli
from PIL import Image
from pydicom.data import get_testdata_file

from m3fm.cli.app import cli

CT_PNG = REPO / "plugins" / "samples" / "ct.png"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """pydicom's CT_small.dcm and the ct plugin's sample slice, in one folder."""
    folder = tmp_path_factory.mktemp("inputs")
    dicom = Path(shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct_small.dcm"))
    png = Path(shutil.copy(CT_PNG, folder / "slice.png"))
    return dicom, png


@pytest.fixture(scope="module")
def clinical_run(inputs, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(cli, [
        "run", "--plugin", "ct", "--lang", "zh", "--json", "--sr", str(out / "sr"),
        "--fhir", str(out / "fhir"), "--heatmaps", str(out / "heatmaps"), *map(str, inputs)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return out, {Path(line["input"]).name: line for line in lines}


def test_a_dicom_input_gets_an_sr_fhir_and_heatmaps_named_in_its_result(clinical_run):
    out, results = clinical_run
    result = results["ct_small.dcm"]
    files = result["files"]
    sr = pydicom.dcmread(files["sr"])
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.Modality == "SR"
    assert Path(files["sr"]).parent == out / "sr"
    report = json.loads(Path(files["fhir"]).read_text(encoding="utf-8"))
    assert report["resourceType"] in ("DiagnosticReport", "Bundle")
    assert result["report"] in json.dumps(report, ensure_ascii=False)
    assert {Path(path).parent for path in files["heatmaps"]} == {out / "heatmaps"}
    pngs = [path for path in files["heatmaps"] if path.endswith(".png")]
    captures = [path for path in files["heatmaps"] if path.endswith(".sc.dcm")]
    assert len(pngs) == len(captures) == len(result["diagnosis"]) + 1  # labels and the report
    with Image.open(pngs[0]) as picture:
        assert picture.format == "PNG"
    capture = pydicom.dcmread(captures[0])
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image
    assert capture.pixel_array.shape[-1] == 3 and list(capture.PatientOrientation) == ["L", "P"]
    assert "notes" not in result


def test_a_picture_gets_fhir_and_heatmaps_and_a_note_instead_of_an_sr(clinical_run):
    out, results = clinical_run
    result = results["slice.png"]
    assert "sr" not in result["files"] and Path(result["files"]["fhir"]).is_file()
    assert all(path.endswith(".png") for path in result["files"]["heatmaps"])
    assert result["notes"] == ["no DICOM SR: the input is not DICOM"]
    assert sorted(path.name for path in (out / "sr").iterdir()) == [
        Path(results["ct_small.dcm"]["files"]["sr"]).name]


def test_results_carry_coded_findings_of_their_report(clinical_run):
    _, results = clinical_run
    for result in results.values():
        assert isinstance(result["findings"], list)
        for finding in result["findings"]:
            assert set(finding) == {"label", "present", "side", "lobe"}


def test_text_output_lists_each_inputs_files_and_notes(inputs, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", "--plugin", "ct", "--no-diagnosis", "--sr",
                           str(tmp_path / "sr"), str(inputs[1]))
    assert code == 0
    assert "  note: no DICOM SR: the input is not DICOM" in out


def test_an_output_folder_that_is_a_file_is_refused_before_the_model_loads(inputs, tmp_path,
                                                                          capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--fhir", str(blocker),
                           str(inputs[0]))
    assert code != 0
    assert err.strip() == f"m3fm: error: --fhir {blocker} is a file; give a folder"


def test_a_series_folder_gets_png_heatmaps_but_no_secondary_capture(inputs, tmp_path):
    series = write_series(tmp_path / "series")  # read as a volume, resampled and reoriented
    result = CliRunner().invoke(cli, ["run", "--plugin", "ct", "--no-report", "--json",
                                      "--heatmaps", str(tmp_path / "maps"), str(series)])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert line["input"] == str(series)
    assert [Path(path).suffix for path in line["files"]["heatmaps"]] == [".png"]
