"""Heatmaps as DICOM Secondary Captures: filed with the slice's study, oriented as the slice,
valid for dciodvfy; none where the orientation is unknown or the input is not one slice."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from m3fm.clinical.captures import patient_orientation, write_secondary_captures
from m3fm.clinical.identity import ModelIdentity

IDENTITY = ModelIdentity("test-model", "0.1.0", "ef" * 32)
PICTURES = {"covid19": np.full((32, 32, 3), 90, np.uint8),
            "report": np.zeros((32, 32, 3), np.uint8)}


def header(**attributes) -> Dataset:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


@pytest.mark.parametrize(("cosines", "expected"), [
    ([1, 0, 0, 0, 1, 0], ("L", "P")),     # axial, as scanners write it
    ([-1, 0, 0, 0, -1, 0], ("R", "A")),
    ([0, 1, 0, 0, 0, -1], ("P", "F")),    # sagittal
    ([0.9, 0.1, 0, 0, 0.2, -0.95], ("L", "F")),  # oblique: the axis it runs along most
])
def test_orientation_letters_come_from_image_orientation(cosines, expected):
    assert patient_orientation(header(ImageOrientationPatient=cosines)) == expected


def test_a_stated_patient_orientation_wins_and_none_is_none():
    assert patient_orientation(header(PatientOrientation=["A", "F"])) == ("A", "F")
    assert patient_orientation(header(ImageOrientationPatient=None)) is None


def test_captures_are_filed_with_the_slice_and_say_they_are_ai_made(tmp_path):
    source = tmp_path / "slice.dcm"
    written = write_secondary_captures(PICTURES, [header()], IDENTITY, source, tmp_path)
    assert [path.name.split(".", 1)[1] for path in written] == ["covid19.sc.dcm",
                                                              "report.sc.dcm"]
    first, second = (pydicom.dcmread(path) for path in written)
    original = header()
    assert first.StudyInstanceUID == original.StudyInstanceUID
    assert first.PatientID == original.PatientID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != original.SeriesInstanceUID
    assert [first.InstanceNumber, second.InstanceNumber] == [1, 2]
    assert first.pixel_array.shape == (32, 32, 3) and int(first.pixel_array[0, 0, 0]) == 90
    assert "not for diagnostic use" in first.ImageComments
    assert not list(tmp_path.glob(".*partial"))


def test_no_captures_without_an_orientation_or_for_a_series(tmp_path):
    unknown = header(ImageOrientationPatient=None)
    assert write_secondary_captures(PICTURES, [unknown], IDENTITY, tmp_path / "a.dcm",
                                    tmp_path) == []
    assert write_secondary_captures(PICTURES, [header(), header()], IDENTITY,
                                    tmp_path / "series", tmp_path) == []
    assert write_secondary_captures(PICTURES, [], IDENTITY, tmp_path / "a.png", tmp_path) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian's dicom3tools) is not installed")
def test_captures_pass_dciodvfy(tmp_path):
    [path, _] = write_secondary_captures(PICTURES, [header()], IDENTITY, tmp_path / "s.dcm",
                                         tmp_path)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines()
              if line.startswith("Error")]
    assert errors == []
