"""read_dataset and summarize: formats found through the registry, by name or by detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3fm.data import read_dataset, summarize
from m3fm.registry import DataFormatError, UnknownNameError, get_registry

BUILT_IN = ["cov-ctr", "covid-cxr", "manifest", "r2gen"]


def covctr_folder(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.png").write_bytes(b"\x89PNG")
    entries = [
        {"id": "a.png", "image_path": "a.png", "report": report, "label1": label, "COVID": 1,
         "split": "train"}
        for report, label in (("Normal.", "english"), ("正常。", "chinese"))
    ]
    (folder / "annotation.json").write_text(json.dumps({"train": entries}), "utf-8")
    return folder


def r2gen_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    entries = [{"id": "1", "report": "No effusion.", "image_path": ["1.png"]}]
    (folder / "annotation.json").write_text(json.dumps({"train": entries, "val": []}), "utf-8")
    return folder


def covidcxr_folder(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    (folder / "metadata.csv").write_text(
        "patientid,finding,view,modality,filename,clinical_notes,license\n"
        "1,COVID-19,PA,X-ray,a.jpg,infiltrates,CC BY\n",
        "utf-8",
    )
    return folder


def manifest_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.jsonl").write_text('{"language": "en", "report": "Normal."}\n', "utf-8")
    return folder


FOLDERS = {
    "cov-ctr": covctr_folder,
    "r2gen": r2gen_folder,
    "covid-cxr": covidcxr_folder,
    "manifest": manifest_folder,
}


def test_built_in_formats_are_registered_as_a_plugin():
    registry = get_registry()
    assert set(BUILT_IN) <= set(registry.names("dataset"))
    assert registry.dataset("cov-ctr").name == "cov-ctr"
    assert registry.plugins["formats"].provides["dataset"] == [
        "cov-ctr", "covid-cxr", "r2gen", "manifest"
    ]


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_detection_picks_exactly_the_right_format(tmp_path, name):
    folder = FOLDERS[name](tmp_path / name)
    registry = get_registry()
    assert [other for other in BUILT_IN if registry.dataset(other).detect(folder)] == [name]
    result = read_dataset(folder)
    assert result.records and {record.dataset for record in result.records} == {name}


def test_format_by_name_skips_detection(tmp_path):
    folder = manifest_folder(tmp_path / "data")
    (record,) = read_dataset(str(folder / "manifest.jsonl"), format="manifest").records
    assert record.report == "Normal."
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'dicom-sr'; installed: .*cov-ctr"):
        read_dataset(folder, format="dicom-sr")


def test_unknown_folder_lists_the_formats_tried(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", "utf-8")
    tried = r"none matches; tried cov-ctr, (.*, )?covid-cxr, manifest"  # and any plugin's
    with pytest.raises(DataFormatError, match=tried):
        read_dataset(tmp_path)


def test_ambiguous_folder_names_the_formats_it_matches(tmp_path):
    folder = covctr_folder(tmp_path / "both")
    (folder / "manifest.csv").write_text("language,report\nen,Normal.\n", "utf-8")
    with pytest.raises(DataFormatError, match="it matches cov-ctr, manifest"):
        read_dataset(folder)


def test_missing_path_and_missing_annotation_are_format_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no such file or folder"):
        read_dataset(tmp_path / "absent")
    with pytest.raises(DataFormatError, match=r"no annotation\.json in this folder"):
        read_dataset(tmp_path, format="cov-ctr")


def test_invalid_top_level_json_is_a_format_error(tmp_path):
    (tmp_path / "annotation.json").write_text('{"train": [}', "utf-8")
    message = r"annotation\.json: invalid JSON at line 1 column 12"
    with pytest.raises(DataFormatError, match=message):
        read_dataset(tmp_path, format="r2gen")


@pytest.mark.parametrize(
    "make",
    [
        lambda root: root / "absent",
        lambda root: root / "file\0with-nul",
        lambda root: (root / "annotation.json").mkdir() or root,
        lambda root: (root / "annotation.json").write_bytes(b"\xff\xfe\x00garbage") and root,
        lambda root: (root / "metadata.csv").write_bytes(b"a,\0b\n") and root,
        lambda root: (root / "manifest.jsonl").write_text("[[[[", "utf-8") and root,
        lambda root: (root / "annotation.json").write_text("[" * 100_000, "utf-8") and root,
    ],
    ids=["absent", "nul-byte", "folder-as-file", "binary", "nul-in-csv", "bad-jsonl", "deep-json"],
)
def test_detect_never_raises(tmp_path, make):
    path = make(tmp_path)
    registry = get_registry()
    assert [name for name in BUILT_IN if registry.dataset(name).detect(path)] == []


def test_summarize_counts_split_modality_language(tmp_path):
    result = read_dataset(covctr_folder(tmp_path / "ctr"))
    assert summarize(result) == [
        {"split": "train", "modality": "ct", "language": "en", "records": 1, "with_image": 1,
         "labelled": 1},
        {"split": "train", "modality": "ct", "language": "zh", "records": 1, "with_image": 1,
         "labelled": 1},
    ]
    text_only = summarize(read_dataset(manifest_folder(tmp_path / "own")))
    assert text_only == [{"split": "train", "modality": None, "language": "en", "records": 1,
                          "with_image": 0, "labelled": 0}]
