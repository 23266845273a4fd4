"""The R2Gen reader: a text-only corpus, with images used only when they are really there."""

from __future__ import annotations

import json
from pathlib import Path

from m3fm.data import r2gen


def entry(id_: str, images: list[str] | None = None, **fields) -> dict:
    names = images if images is not None else [f"CXR{id_}-1.png", f"CXR{id_}-2.png"]
    return {"id": id_, "report": "The heart is normal in size. No effusion.", "image_path": names,
            **fields}


def write(folder: Path, splits: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "annotation.json").write_text(json.dumps(splits), "utf-8")
    return folder


def test_reports_without_images_are_text_only_english_cxr(tmp_path):
    write(tmp_path, {"train": [entry("1"), entry("2")], "val": [entry("3")], "test": [entry("4")]})
    result = r2gen.read(tmp_path)
    assert result.problems == ()
    assert [(record.id, record.split) for record in result.records] == [
        ("1", "train"), ("2", "train"), ("3", "val"), ("4", "test")
    ]
    record = result.records[0]
    assert (record.image, record.language, record.modality) == (None, "en", "cxr")
    assert record.source == "annotation.json:train[0]"


def test_first_image_present_is_used(tmp_path):
    (tmp_path / "images" / "CXR2").mkdir(parents=True)
    (tmp_path / "images" / "CXR2" / "1.png").write_bytes(b"\x89PNG")
    write(tmp_path, {"train": [entry("1"), entry("2", ["CXR2/0.png", "CXR2/1.png"])]})
    first, second = r2gen.read(tmp_path).records
    assert first.image is None
    assert second.image == (tmp_path / "images" / "CXR2" / "1.png").resolve()


def test_bad_entries_are_problems(tmp_path):
    write(tmp_path, {"train": [
        entry("1"),
        entry("2", report=""),
        {"id": "3", "report": "No acute disease."},
        entry("4", images="CXR4.png"),
        entry("1"),
    ]})
    result = r2gen.read(tmp_path)
    assert [record.id for record in result.records] == ["1"]
    assert {problem.source: problem.message for problem in result.problems} == {
        "annotation.json:train[1]": "empty field 'report'",
        "annotation.json:train[2]": "image_path must be a list of file names, got None",
        "annotation.json:train[3]": "image_path must be a list of file names, got 'CXR4.png'",
        "annotation.json:train[4]":
            "duplicate id in this split (first at annotation.json:train[0])",
    }


def test_integer_ids_are_accepted(tmp_path):
    write(tmp_path, {"train": [entry(7)]})
    assert r2gen.read(tmp_path).records[0].id == "7"
