"""Inputs for the clinical outputs' tests: a `m3fm run` result written by hand (no model
needed) and a DICOM series made from pydicom's CT_small."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ZH_REPORT = "双肺纹理增多，右肺下叶见磨玻璃影，未见胸腔积液。"


def zh_result(source: Path, *, other_label: str, ood: bool) -> dict:
    """A Chinese CT result for `source`: a report with a located present finding and a negated
    one, covid19 and `other_label` scored (the latter with English prompts, unvalidated), and
    an out-of-distribution verdict `ood`."""
    return {
        "input": str(source), "modality": "ct", "language": "zh", "report": ZH_REPORT,
        "diagnosis": {"covid19": 0.81, other_label: 0.25},
        "prompt_languages": {"covid19": "zh", other_label: "en"},
        "unvalidated": [other_label],
        "findings": [
            {"label": "ground_glass_opacity", "present": True, "side": "right", "lobe": "lower"},
            {"label": "effusion", "present": False, "side": None, "lobe": None},
        ],
        "ood": ood, "ood_score": 4.5 if ood else 1.7, "ood_threshold": 3.2,
    }


def write_series(folder: Path, slices: int = 3) -> Path:
    """`folder` holding `slices` slices of one series: CT_small with new instance UIDs and
    positions 5 mm apart."""
    folder.mkdir()
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    for number in range(1, slices + 1):
        dataset = copy.deepcopy(template)
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.SeriesInstanceUID = series_uid
        dataset.InstanceNumber = number
        dataset.ImagePositionPatient = [0.0, 0.0, 5.0 * number]
        dataset.save_as(folder / f"slice{number}.dcm")
    return folder
