"""The generic manifest reader, in CSV and in JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3fm.data import manifest
from m3fm.registry import DataFormatError


@pytest.fixture
def image(tmp_path) -> Path:
    (tmp_path / "scans").mkdir()
    path = tmp_path / "scans" / "x1.png"
    path.write_bytes(b"\x89PNG")
    return path


def problems_by_source(result) -> dict[str, str]:
    return {problem.source: problem.message for problem in result.problems}


def test_csv_rows_with_defaults_labels_and_extra_columns(tmp_path, image):
    (tmp_path / "manifest.csv").write_text(
        "image,modality,language,report,labels,split,id,patient,group,site\n"
        "scans/x1.png,cxr,en,Clear lungs.,covid19=0;effusion=1,val,r1,p1,g1,Oslo\n"
        ",,zh,双肺清晰。,,,,,g1,\n"
        f"{image},cxr,en,,covid19=1,,,,,\n",
        "utf-8",
    )
    result = manifest.read(tmp_path)
    assert result.problems == ()
    first, text_only, image_only = result.records
    assert first.image == image and first.image.is_absolute()
    assert (first.split, first.id, first.patient, first.group) == ("val", "r1", "p1", "g1")
    assert first.labels == {"covid19": 0, "effusion": 1}
    assert first.meta == {"site": "Oslo"}
    assert (text_only.image, text_only.modality, text_only.split, text_only.id) == (
        None, None, "train", "line-3"
    )
    assert text_only.labels == {} and text_only.source == "manifest.csv:3"
    assert image_only.report == "" and image_only.labels == {"covid19": 1}


def test_csv_bad_rows_are_problems_with_their_line(tmp_path, image):
    (tmp_path / "manifest.csv").write_text(
        "image,modality,language,report,labels\n"
        "scans/x1.png,cxr,en,Clear lungs.,covid19=1\n"
        "scans/nope.png,cxr,en,Clear lungs.,\n"
        "scans/x1.png,,en,Clear lungs.,\n"
        ",,en,Clear lungs.,covid19\n"
        ",,en,Clear lungs.,covid19=2\n"
        ",,en,Clear lungs.,covid19=1;covid19=0\n"
        ",,,Clear lungs.,\n"
        ",,EN,Clear lungs.,\n"
        ",,en,,\n"
        ",,en,too,many,values\n"
        ',,en,"a report\nover two lines",\n'
        ",,en,x,effusion\n",
        "utf-8",
    )
    result = manifest.read(tmp_path)
    assert [record.source for record in result.records] == ["manifest.csv:2", "manifest.csv:12"]
    problems = problems_by_source(result)
    assert problems["manifest.csv:3"] == "image not found: scans/nope.png"
    assert problems["manifest.csv:4"] == "a row with an image needs a modality"
    assert problems["manifest.csv:5"] == "label 'covid19' must look like name=0 or name=1"
    assert problems["manifest.csv:6"] == "label 'covid19' must be 0 or 1, got '2'"
    assert problems["manifest.csv:7"] == "label 'covid19' is given twice"
    assert problems["manifest.csv:8"] == "missing or empty field 'language'"
    assert problems["manifest.csv:9"].startswith("language: String should match pattern")
    assert problems["manifest.csv:10"] == "row has neither an image nor a report"
    assert problems["manifest.csv:11"] == "expected 5 values, found 6"
    assert problems["manifest.csv:14"] == "label 'effusion' must look like name=0 or name=1"
    assert len(problems) == 10


def test_jsonl_syntax_error_is_that_lines_problem(tmp_path, image):
    lines = [
        json.dumps({"image": str(image), "modality": "ct", "language": "en", "report": "Normal.",
                    "labels": {"covid19": 1}, "id": 17, "slice": 42}),
        "",
        '{"language": "en", "report": "broken",}',
        json.dumps(["not", "an", "object"]),
        json.dumps({"language": "zh", "report": "正常。\u2028第二行", "labels": {"Covid": 1}},
                   ensure_ascii=False),
        json.dumps({"language": "en"}),
        "[" * 100_000,
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    result = manifest.read(tmp_path / "data.jsonl")
    (record,) = result.records
    assert (record.id, record.labels, record.meta) == ("17", {"covid19": 1}, {"slice": "42"})
    assert record.source == "data.jsonl:1"
    problems = problems_by_source(result)
    assert problems["data.jsonl:3"].startswith("invalid JSON at column 39:")
    assert problems["data.jsonl:4"] == "expected a JSON object, got list"
    assert problems["data.jsonl:5"].startswith("labels.Covid.[key]: String should match pattern")
    assert problems["data.jsonl:6"] == "missing field 'report'"
    assert problems["data.jsonl:7"] == "JSON nested too deeply to read"
    assert len(problems) == 5


def test_folder_with_both_manifests_is_ambiguous(tmp_path):
    (tmp_path / "manifest.csv").write_text("language,report\nen,x\n", "utf-8")
    (tmp_path / "manifest.jsonl").write_text('{"language": "en", "report": "x"}\n', "utf-8")
    with pytest.raises(DataFormatError, match="pass the path of the one to read"):
        manifest.read(tmp_path)
    assert len(manifest.read(tmp_path / "manifest.jsonl").records) == 1


def test_missing_required_column_is_a_format_error(tmp_path):
    (tmp_path / "manifest.csv").write_text("image,report\n,x\n", "utf-8")
    with pytest.raises(DataFormatError, match="missing column"):
        manifest.read(tmp_path)
    assert not manifest.detect(tmp_path)
