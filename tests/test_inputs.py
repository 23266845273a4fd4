"""Expanding the paths a user names into inputs."""

from __future__ import annotations

import os
from pathlib import Path

import m3fm.inputs
from m3fm.inputs import collect_inputs, is_dicom_series, iter_inputs
from m3fm.registry import ModalitySpec


def _modality(accepts_directories: bool) -> ModalitySpec:
    return ModalitySpec(
        name="demo", description="demo", file_types=(".png", ".dcm"),
        accepts_directories=accepts_directories, slice_shape=(1, 8, 8),
        volume_shape=(1, 4, 8, 8) if accepts_directories else None,
        load=lambda path: None, build_encoder=lambda options: None, labels=("covid19",),
    )


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_folder_of_images_expands_to_accepted_files(tmp_path):
    _touch(tmp_path / "b.png", tmp_path / "sub" / "a.png", tmp_path / "notes.txt")
    assert collect_inputs(_modality(False), [tmp_path]) == [tmp_path / "b.png",
                                                           tmp_path / "sub" / "a.png"]


def test_dicom_series_folder_is_one_input_when_the_modality_reads_folders(tmp_path):
    series = tmp_path / "series"
    _touch(series / "1.dcm", series / "2.dcm", series / "IM0003")
    assert is_dicom_series(series)
    assert collect_inputs(_modality(True), [series]) == [series]
    assert collect_inputs(_modality(False), [series]) == [series / "1.dcm", series / "2.dcm"]


def test_missing_and_empty_paths_are_kept_to_be_reported(tmp_path):
    missing, empty = tmp_path / "missing.png", tmp_path / "empty"
    empty.mkdir()
    assert collect_inputs(_modality(True), [missing, empty, missing]) == [missing, empty]


def test_listing_starts_before_the_tree_is_walked(tmp_path, monkeypatch):
    _touch(*(tmp_path / f"d{folder}" / f"{index}.png" for folder in range(3)
             for index in range(3)))
    opened, real_scandir = [], os.scandir

    def scandir(path):
        opened.append(Path(path).name)
        return real_scandir(path)

    monkeypatch.setattr(m3fm.inputs.os, "scandir", scandir)
    inputs = iter_inputs(_modality(False), [tmp_path])
    assert opened == []  # a generator: nothing is read before the first input is asked for
    assert next(inputs) == tmp_path / "d0" / "0.png"
    assert opened == [tmp_path.name, "d0"]  # the other folders are not opened yet


def test_listing_order_is_sorted_paths_and_overlapping_arguments_count_once(tmp_path):
    files = [tmp_path / "a" / "z.png", tmp_path / "a.png", tmp_path / "a" / "b" / "c.png",
             tmp_path / "a-b.png"]
    _touch(*files)
    demo = _modality(False)
    assert collect_inputs(demo, [tmp_path]) == sorted(files)
    assert collect_inputs(demo, [tmp_path / "a.png", tmp_path, tmp_path / "a"]) == [
        tmp_path / "a.png", *(path for path in sorted(files) if path.name != "a.png")]
