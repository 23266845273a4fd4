"""The covid-chestxray-dataset reader: real line numbers, findings, and patient-level splits."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from m3fm.data import covidcxr
from m3fm.registry import DataFormatError

HEADER = ["patientid", "offset", "sex", "age", "finding", "view", "modality", "date", "location",
          "filename", "doi", "url", "license", "clinical_notes", "other_notes"]


def row(patient: str, filename: str, finding: str = "COVID-19", modality: str = "X-ray",
        notes: str = "bilateral infiltrates", view: str = "PA") -> list[str]:
    values = dict.fromkeys(HEADER, "")
    values.update(patientid=patient, filename=filename, finding=finding, modality=modality,
                  clinical_notes=notes, view=view, license="CC BY")
    return [values[name] for name in HEADER]


def write(folder: Path, rows: list[list[str]], images: tuple[str, ...]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        (folder / "images" / name).write_bytes(b"\xff\xd8")
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return folder


def test_rows_become_records_with_labels_meta_and_patient(tmp_path):
    write(tmp_path, [
        row("1", "a.jpg", "COVID-19, ARDS"),
        row("1", "b.jpg", "SARS", modality="CT", view="Axial"),
        row("2", "c.jpg", "Pneumonia/Viral/COVID-19", notes=""),
    ], images=("a.jpg", "b.jpg", "c.jpg"))
    result = covidcxr.read(tmp_path)
    assert result.problems == ()
    a, b, c = result.records
    assert (a.modality, a.labels, a.patient, a.language) == ("cxr", {"covid19": 1}, "1", "en")
    assert a.meta == {"finding": "COVID-19, ARDS", "view": "PA", "license": "CC BY"}
    assert a.image == tmp_path / "images" / "a.jpg"
    assert (b.modality, b.labels) == ("ct", {"covid19": 0})
    assert c.report == "" and c.labels == {"covid19": 1}  # an empty note is kept
    assert [record.source for record in result.records] == [
        "metadata.csv:2", "metadata.csv:3", "metadata.csv:4"
    ]


def test_problems_name_the_real_line_after_a_multi_line_note(tmp_path):
    write(tmp_path, [
        row("1", "a.jpg", notes="first line\nsecond line\nthird line"),
        row("2", "missing.jpg"),
        row("3", "b.jpg", modality="MRI"),
        row("", "c.jpg"),
        row("4", "d.jpg", finding=""),
        row("5", "a.jpg"),
        row("6", "e.jpg")[:5],
    ], images=("a.jpg", "b.jpg", "c.jpg", "d.jpg"))
    result = covidcxr.read(tmp_path)
    assert [record.source for record in result.records] == ["metadata.csv:2"]
    assert result.records[0].report == "first line\nsecond line\nthird line"
    problems = {problem.source: problem.message for problem in result.problems}
    assert problems == {
        "metadata.csv:5": "image file not found: images/missing.jpg",
        "metadata.csv:6": "modality must be one of X-ray, CT, got 'MRI'",
        "metadata.csv:7": "empty field 'patientid'",
        "metadata.csv:8": "empty field 'finding'",
        "metadata.csv:10": "expected 15 values, found 5",
        "metadata.csv:9": "duplicate id in this split (first at metadata.csv:2)",
    }


def test_split_is_by_patient_and_stable():
    # Fixed expectations: a salted or changed hash would move patients between splits.
    assert [covidcxr.patient_split(p) for p in ("1", "7", "8", "9", "10", "39")] == [
        "train", "train", "val", "val", "train", "val"
    ]


def test_missing_column_is_a_format_error(tmp_path):
    (tmp_path / "metadata.csv").write_text("patientid,finding\n1,COVID-19\n", "utf-8")
    with pytest.raises(DataFormatError, match="missing column"):
        covidcxr.read(tmp_path)


@pytest.mark.parametrize(
    ("finding", "positive"),
    [("COVID-19", True), ("covid-19, ARDS", True), ("Pneumonia/Viral/COVID-19", True),
     ("SARS", False), ("No Finding", False), ("COVID-19 negative", False)],
)
def test_finding_names_covid19(finding, positive):
    assert covidcxr.names_covid19(finding) is positive
