"""The chest X-ray modality plugin, through the registry and m3fm.imaging.preprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from image_checks import input_error, unit_range
from PIL import Image
from pydicom.data import get_testdata_file

from m3fm.imaging import preprocess
from m3fm.registry import EncoderOptions, ModalitySpec, get_registry

SHAPE = (1, 224, 224)


@pytest.fixture
def cxr() -> ModalitySpec:
    return get_registry().modality("cxr")


def test_registered_with_declared_contract(cxr):
    assert cxr.dims == (2,) and cxr.slice_shape == SHAPE
    assert cxr.file_types == (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
    assert cxr.dicom_modalities == ("CR", "DX")
    assert len(cxr.labels) == 15 and {"pleural_thickening", "covid19"} <= set(cxr.labels)


def test_non_square_rgb_png(cxr, tmp_path):
    path = tmp_path / "film.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(path)
    image = preprocess(cxr, path)
    assert image.shape == SHAPE and image.dtype == torch.float32


def test_jpeg(cxr, tmp_path):
    path = tmp_path / "film.jpeg"
    gradient = np.tile(np.linspace(0, 255, 100, dtype=np.uint8), (80, 1))
    Image.fromarray(gradient).save(path)
    image = unit_range(preprocess(cxr, path))
    assert image.shape == SHAPE
    assert image.min() == pytest.approx(0, abs=1e-5) and image.max() == pytest.approx(1, abs=1e-5)


def radiograph(path: Path, source: str = "MR_small.dcm", **tags) -> Path:
    """A pydicom sample file tagged as a digital radiograph (DX), with more tags changed."""
    dataset = pydicom.dcmread(get_testdata_file(source))
    dataset.Modality = "DX"
    for name, value in tags.items():
        setattr(dataset, name, value)
    dataset.save_as(path)
    return path


def test_dicom(cxr, tmp_path):
    image = preprocess(cxr, radiograph(tmp_path / "chest.dcm"))
    assert image.shape == SHAPE


def test_monochrome1_dicom_is_shown_inverted(cxr, tmp_path):
    normal_path = radiograph(tmp_path / "normal.dcm", "CT_small.dcm")
    inverted_path = radiograph(tmp_path / "monochrome1.dcm", "CT_small.dcm",
                               PhotometricInterpretation="MONOCHROME1")
    normal = unit_range(preprocess(cxr, normal_path))
    inverted = unit_range(preprocess(cxr, inverted_path))
    assert torch.allclose(inverted, 1 - normal, atol=1e-4)


@pytest.mark.data
def test_real_covid_cxr_jpeg(cxr, data_root):
    path = sorted((data_root / "covid-cxr" / "images").glob("*.jpg"))[0]
    assert preprocess(cxr, path).shape == SHAPE


def test_aspect_ratio_is_preserved(cxr, tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((200, 400), np.uint8)
    pixels[50:150, 100:300] = 255  # a 200 x 100 white rectangle
    Image.fromarray(pixels).save(path)
    bright = unit_range(preprocess(cxr, path))[0] > 0.5
    rows, cols = bright.nonzero(as_tuple=True)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert width / height == pytest.approx(2, rel=0.05)
    assert width == pytest.approx(112, abs=1)  # 200 of 400 columns, on a 224-pixel side


def test_encoder_maps_batch_to_features(cxr):
    encoder = cxr.build_encoder(EncoderOptions()).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, *SHAPE))
    assert features.shape == (1, encoder.feature_dim)


# --- bad input ---------------------------------------------------------------------------------


def test_volume_file_type_is_refused(cxr, tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b")
    message = input_error(cxr, path)
    assert "does not read .nii.gz files" in message
    assert ".png, .jpg, .jpeg, .tif, .tiff, .dcm" in message


def test_missing_file(cxr, tmp_path):
    message = input_error(cxr, tmp_path / "absent.png")
    assert message.endswith("no such file or folder")


def test_truncated_png(cxr, tmp_path):
    whole = tmp_path / "whole.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(whole)
    truncated = tmp_path / "truncated.png"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    message = input_error(cxr, truncated)
    assert "cannot read it as cxr input" in message and "truncated" in message


def test_corrupt_dicom(cxr, tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    path = radiograph(tmp_path / "corrupt.dcm",  # a valid header over damaged pixel data
                      PixelData=dataset.PixelData[:100])
    message = input_error(cxr, path)
    assert "cannot read it as cxr input" in message and "pixel data" in message


def test_empty_image(cxr, tmp_path):
    path = tmp_path / "empty.png"
    Image.new("L", (300, 200)).save(path)
    message = input_error(cxr, path)
    assert "image is constant" in message and "nothing to encode" in message
