"""The out-of-distribution flag: the description's arithmetic and files, the bundled model's
verdicts on inputs it was not made for, its flag rate on real validation images, and
`m3fm calibrate-ood`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.cbook
import pydicom
import pydicom.data
import pytest
import torch
from conftest import REPO, run_cli
from generation_fixtures import train_tiny_report_model

import m3fm
from m3fm.checkpoint import CheckpointError
from m3fm.clinical.ood import (
    DESCRIPTION_FILE,
    TENSORS_FILE,
    OODDetector,
    describe,
    images_by_modality,
)
from m3fm.data import read_records
from m3fm.models import default_model_dir
from m3fm.registry import InputError

SAMPLES = REPO / "plugins" / "samples"


def _clusters(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    train = torch.randn(400, 8, generator=generator)
    val = torch.randn(100, 8, generator=generator)
    return train, val


def _detector() -> OODDetector:
    train, val = _clusters()
    return OODDetector({"ct": describe(train, val)}, {"data": "synthetic"})


# The description, on synthetic features --------------------------------------------------------

def test_threshold_flags_at_most_the_allowed_share_of_validation_rows():
    train, val = _clusters()
    description = describe(train, val, max_flagged=0.05)
    assert description.counts == {"train": 400, "val": 100, "val_flagged": 5}
    assert (description.scores(val) > description.threshold).sum() == 5
    assert describe(train, val[:7], max_flagged=0.05).counts["val_flagged"] == 0  # 5% of 7 < 1


def test_far_rows_are_flagged_and_near_ones_are_not():
    detector = _detector()
    rows = detector.assess("ct", torch.stack([torch.zeros(8), torch.full((8,), 6.0)]))
    assert [row["ood"] for row in rows] == [False, True]
    assert rows[0]["ood_score"] < rows[0]["ood_threshold"] < rows[1]["ood_score"]
    assert set(rows[0]) == {"ood", "ood_score", "ood_threshold"}


def test_a_saved_description_round_trips_bit_for_bit(tmp_path):
    """A report model re-saves its alignment model's description: the files must not change,
    even where the precision holds -0.0 (a dead feature of a small model gives exact zeros)."""
    detector = _detector()
    description = detector.descriptions["ct"]
    description.precision[0, 1] = description.precision[1, 0] = -0.0
    description.precision[2, 2] = -0.0
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    detector.save(first)
    OODDetector.load(first).save(second)
    for name in (DESCRIPTION_FILE, TENSORS_FILE):
        assert (second / name).read_bytes() == (first / name).read_bytes()


def test_a_modality_without_a_description_gets_no_statement():
    assert _detector().assess("cxr", torch.zeros(3, 8)) == []


def test_features_of_another_dim_are_refused():
    with pytest.raises(InputError, match=r"\(N, 8\)"):
        _detector().assess("ct", torch.zeros(2, 256))


def test_saved_description_loads_with_the_same_verdicts(tmp_path):
    detector = _detector()
    detector.save(tmp_path)
    loaded = OODDetector.load(tmp_path)
    probe = torch.randn(20, 8, generator=torch.Generator().manual_seed(1)) * 2
    assert loaded.assess("ct", probe) == detector.assess("ct", probe)
    summary = json.loads((tmp_path / DESCRIPTION_FILE).read_text())
    assert summary["modalities"]["ct"]["dim"] == 8 and summary["data"] == {"data": "synthetic"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [DESCRIPTION_FILE, TENSORS_FILE]


def test_a_checkpoint_without_a_description_loads_none(tmp_path):
    assert OODDetector.load(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncate", "other tensors", "no json", "bad json",
                                    "wrong dim"])
def test_a_damaged_description_is_one_line(tmp_path, damage):
    _detector().save(tmp_path)
    tensors, summary = tmp_path / TENSORS_FILE, tmp_path / DESCRIPTION_FILE
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "other tensors":
        shutil.copy(tensors, tmp_path / "keep")
        OODDetector({"ct": describe(*_clusters(seed=2))}, {}).save(tmp_path)
        shutil.copy(tmp_path / "keep", tensors)
        (tmp_path / "keep").unlink()
    elif damage == "no json":
        summary.unlink()
    elif damage == "bad json":
        summary.write_text("{")
    else:
        document = json.loads(summary.read_text())
        document["modalities"]["ct"]["dim"] = 9
        summary.write_text(json.dumps(document))
    with pytest.raises(CheckpointError) as error:
        OODDetector.load(tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


# The bundled model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled():
    return m3fm.load(default_model_dir(), device="cpu")


def _assess(model, path: Path, modality: str) -> dict:
    [row] = model.ood.assess(modality, model.image_features([path], modality=modality))
    return row


@pytest.fixture(scope="module")
def mr_labelled_ct(tmp_path_factory) -> Path:
    """pydicom's MR sample whose header says CT: a mislabelled file, which the modality check
    (that refuses the MR file itself) lets through."""
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    dataset.Modality = "CT"
    path = tmp_path_factory.mktemp("mr") / "mr-as-ct.dcm"
    dataset.save_as(path)
    return path


def test_the_bundled_model_carries_its_description(bundled):
    assert set(bundled.ood.descriptions) == {"ct", "cxr"}
    summary = json.loads((default_model_dir() / "align" / DESCRIPTION_FILE).read_text())
    assert summary["data"]["train_split"] == "train" and summary["data"]["val_split"] == "val"
    assert all(entry["val_flagged"] <= 0.05 * entry["val"]
               for entry in summary["modalities"].values())


@pytest.mark.parametrize("modality", ["ct", "cxr"])
@pytest.mark.parametrize("photo", ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"])
def test_colour_photographs_are_flagged(bundled, photo, modality):
    path = Path(matplotlib.cbook.get_sample_data(photo, asfileobj=False))
    assert _assess(bundled, path, modality)["ood"]


def test_a_ct_slice_given_as_chest_xray_is_flagged(bundled):
    assert _assess(bundled, SAMPLES / "ct.png", "cxr")["ood"]


def test_an_mr_slice_given_as_ct_is_flagged(bundled, mr_labelled_ct):
    assert _assess(bundled, mr_labelled_ct, "ct")["ood"]
    with pytest.raises(InputError, match="is 'MR'"):  # the file as published never gets there
        bundled.image_features([pydicom.data.get_testdata_file("MR_small.dcm")], modality="ct")


def test_the_ct_sample_is_not_flagged(bundled):
    # The cxr sample is a 96-pixel drawing, unlike any X-ray: it is flagged, rightly, and is no
    # stand-in for an X-ray given as CT (test_real_chest_xrays_given_as_ct_are_flagged is).
    assert not _assess(bundled, SAMPLES / "ct.png", "ct")["ood"]


# Real data -----------------------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "modality"), [("cov-ctr", "ct"), ("covid-cxr", "cxr")])
def test_at_most_five_percent_of_real_validation_images_are_flagged(bundled, data_root,
                                                                    dataset, modality):
    images = images_by_modality(read_records(data_root / dataset, dataset), "val")[modality]
    rows = bundled.ood.assess(modality, bundled.image_features(images, modality=modality))
    flagged = sum(row["ood"] for row in rows)
    assert len(rows) == {"cov-ctr": 72, "covid-cxr": 45}[dataset]
    assert flagged <= 0.05 * len(rows), f"{flagged} of {len(rows)} flagged"


@pytest.mark.data
@pytest.mark.slow
def test_real_chest_xrays_given_as_ct_are_flagged(bundled, data_root):
    images = images_by_modality(read_records(data_root / "covid-cxr", "covid-cxr"), "val")["cxr"]
    rows = bundled.ood.assess("ct", bundled.image_features(images, modality="ct"))
    assert sum(row["ood"] for row in rows) >= 0.95 * len(rows)


# Training and the CLI -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run) of a tiny report model trained with its alignment model (``run/align``)."""
    return train_tiny_report_model(tmp_path_factory.mktemp("ood"))


@pytest.mark.slow
def test_training_leaves_a_description_that_the_report_model_carries(tiny_run):
    _, run = tiny_run
    align = run / "align" / "final"
    summary = json.loads((align / DESCRIPTION_FILE).read_text())
    assert summary["modalities"]["ct"]["train"] == 8 and summary["modalities"]["ct"]["val"] == 4
    for name in (DESCRIPTION_FILE, TENSORS_FILE):
        assert (run / "final" / "align" / name).read_bytes() == (align / name).read_bytes()
    assert m3fm.load(run / "final").ood is not None and m3fm.load(align).ood is not None


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["final", "align/final"])
def test_calibrate_ood_rewrites_the_description(tiny_run, capsys, tmp_path, folder):
    data, run = tiny_run
    model = tmp_path / "model"
    shutil.copytree(run / folder, model)
    described = model / "align" if folder == "final" else model
    for name in (DESCRIPTION_FILE, TENSORS_FILE):
        (described / name).unlink()
    assert m3fm.load(model).ood is None  # a checkpoint from before the flag still loads
    code, out, err = run_cli(capsys, "calibrate-ood", "--checkpoint", str(model), "--data",
                             str(data), "--json")
    assert code == 0, err
    [row] = json.loads(out)["modalities"]
    assert row["modality"] == "ct" and row["train_images"] == 8 and row["val_images"] == 4
    assert row["val_flag_rate"] <= 0.05
    original = run / "align" / "final" / DESCRIPTION_FILE
    assert (described / DESCRIPTION_FILE).read_text() == original.read_text()


@pytest.mark.slow
def test_calibrate_ood_refuses_bad_input_in_one_line(tiny_run, capsys, tmp_path):
    data, run = tiny_run
    final = run / "align" / "final"
    code, _, err = run_cli(capsys, "calibrate-ood", "--checkpoint", str(final), "--data",
                           str(data), "--split-train", "val")
    assert code == 2 and "both 'val'" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "calibrate-ood", "--checkpoint", str(final), "--data",
                           str(data), "--split-val", "test")
    assert code == 1 and "0 validation" in err and err.count("\n") == 1
    model = tmp_path / "model"
    shutil.copytree(final, model)
    (model / "metadata.json").unlink()
    code, _, err = run_cli(capsys, "calibrate-ood", "--checkpoint", str(model), "--data",
                           str(data))
    assert code == 2 and "does not say which" in err
