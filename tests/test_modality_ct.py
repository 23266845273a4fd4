"""The CT modality plugin: 2D slices and 3D volumes, through the registry and preprocess."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from m3fm.imaging import BACKBONE_MEAN, BACKBONE_STD, SlicePooledEncoder, preprocess
from m3fm.plugins.ct import ct_spec, hu_window
from m3fm.registry import EncoderOptions, InputError, ModalitySpec, get_registry

SLICE = (1, 224, 224)
VOLUME = (1, 32, 224, 224)
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture
def ct() -> ModalitySpec:
    return get_registry().modality("ct")


def unit_range(image: torch.Tensor) -> torch.Tensor:
    """Undo the backbone standardisation, back to [0, 1] grey levels."""
    return image * BACKBONE_STD + BACKBONE_MEAN


def write_nifti(path: Path, hounsfield: np.ndarray) -> Path:
    """A volume with 0.8 x 0.7 mm pixels and 2.5 mm slices, voxel axes in RAS order."""
    nib.save(nib.Nifti1Image(hounsfield.astype(np.int16), np.diag([0.8, 0.7, 2.5, 1.0])), path)
    return path


def write_dicom_series(folder: Path, slices: int = 4, thickness: float = 2.5) -> Path:
    """CT_small.dcm repeated as an axial series; each slice 50 HU brighter than the one below.

    Instance numbers run from the top down, as head-first scans number them, so the loader has
    to use the patient positions, not the file order, to put the slices inferior to superior.
    """
    folder.mkdir()
    template = pydicom.dcmread(CT_SMALL)
    series_uid = generate_uid()
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    for index in range(slices):
        dataset = pydicom.dcmread(CT_SMALL)
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.InstanceNumber = slices - index
        dataset.ImagePositionPatient = [x, y, z + index * thickness]
        dataset.SliceLocation = z + index * thickness
        dataset.SliceThickness = thickness
        dataset.PixelData = (dataset.pixel_array + 50 * index).astype(np.int16).tobytes()
        dataset.save_as(folder / f"IM{dataset.InstanceNumber:04d}")
    return folder


def input_error(spec: ModalitySpec, path: Path) -> str:
    with pytest.raises(InputError) as caught:
        preprocess(spec, path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_registered_for_slices_and_volumes(ct):
    assert ct.dims == (2, 3) and ct.accepts_directories
    assert ct.slice_shape == SLICE and ct.volume_shape == VOLUME
    assert {".dcm", ".nii", ".nii.gz", ".png"} <= set(ct.file_types)
    assert ct.labels == ("covid19",)


def test_lung_window_maps_hounsfield_units_to_unit_range():
    hounsfield = torch.tensor([[-2000.0, -1350.0, -600.0, 150.0, 1000.0]])
    assert torch.allclose(hu_window(-600, 1500)(hounsfield), torch.tensor([[0, 0, 0.5, 1, 1.0]]))


def test_dicom_slice_is_windowed_in_hounsfield_units(ct):
    image = unit_range(preprocess(ct, CT_SMALL))
    assert image.shape == SLICE
    darkest_hu = float(pydicom.dcmread(CT_SMALL).pixel_array.min()) - 1024  # rescale intercept
    # upsampling 128 -> 224 pixels blends the single darkest pixel with its neighbours
    assert image.min().item() == pytest.approx((darkest_hu + 1350) / 1500, abs=0.005)
    assert image.max().item() == pytest.approx(1, abs=1e-5)  # bone, above the window


def test_nifti_volume(ct, tmp_path):
    hounsfield = np.full((40, 48, 20), -2000)
    hounsfield[5:35, 5:43, 2:18] = 500
    image = unit_range(preprocess(ct, write_nifti(tmp_path / "chest.nii.gz", hounsfield)))
    assert image.shape == VOLUME
    assert image.min().item() == pytest.approx(0, abs=1e-5)  # -2000 HU, below -1350
    assert image.max().item() == pytest.approx(1, abs=1e-5)  # 500 HU, above 150


def test_volume_axes_are_superior_posterior_left(ct, tmp_path):
    hounsfield = np.full((40, 48, 20), -1000)
    hounsfield[:8, 36:, 14:] = 100  # voxel axes are RAS: low i = patient left, high j = anterior
    image = preprocess(ct, write_nifti(tmp_path / "marker.nii", hounsfield))[0]
    depth, row, column = (image > image.mean() + 1).nonzero().float().mean(dim=0)
    assert depth > 16  # superior: late slices
    assert row < 112  # anterior: top of the slice
    assert column > 112  # patient left: right side of the slice, as radiologists view it


def test_dicom_series_folder(ct, tmp_path):
    folder = write_dicom_series(tmp_path / "series")
    volume = preprocess(ct, folder)
    assert volume.shape == VOLUME
    slice_means = volume[0].mean(dim=(1, 2))
    assert torch.all(slice_means[1:] >= slice_means[:-1])  # inferior to superior
    assert slice_means[-1] > slice_means[0]
    middle = volume[0, VOLUME[1] // 2].flatten()
    single = preprocess(ct, CT_SMALL)[0].flatten()
    assert torch.corrcoef(torch.stack([middle, single]))[0, 1] > 0.95  # same in-plane layout


@pytest.mark.data
def test_real_cov_ctr_png(ct, data_root):
    path = sorted((data_root / "cov-ctr" / "images").glob("*.png"))[0]
    assert preprocess(ct, path).shape == SLICE


def test_display_png_keeps_its_grey_levels(ct, tmp_path):
    path = tmp_path / "slice.png"
    pixels = np.zeros((100, 100), np.uint8)
    pixels[:, 50:] = 255
    Image.fromarray(pixels).save(path)
    image = unit_range(preprocess(ct, path))
    assert image.min().item() == pytest.approx(0, abs=1e-5)
    assert image.max().item() == pytest.approx(1, abs=1e-5)


def test_variant_spec_follows_its_window_and_shapes(tmp_path):
    mediastinum = ct_spec(name="ct-mediastinum", window=(40, 400), image_size=64, depth=8)
    assert mediastinum.volume_shape == (1, 8, 64, 64)
    hounsfield = np.full((40, 48, 20), -160)
    hounsfield[10:30, 10:40, 5:15] = 240
    volume = unit_range(preprocess(mediastinum, write_nifti(tmp_path / "v.nii.gz", hounsfield)))
    assert volume.shape == (1, 8, 64, 64)
    assert volume.min().item() == pytest.approx(0, abs=1e-5)
    assert volume.max().item() == pytest.approx(1, abs=1e-5)
    assert preprocess(mediastinum, CT_SMALL).shape == (1, 64, 64)


def test_encoder_accepts_slices_and_volumes(ct):
    encoder = ct.build_encoder(EncoderOptions()).eval()
    assert isinstance(encoder, SlicePooledEncoder)
    with torch.no_grad():
        assert encoder(torch.randn(2, *SLICE)).shape == (2, encoder.feature_dim)
        assert encoder(torch.randn(1, *VOLUME)).shape == (1, encoder.feature_dim)


# --- bad input ---------------------------------------------------------------------------------


def test_text_file_is_refused(ct, tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("no acute findings")
    message = input_error(ct, path)
    assert "does not read .txt files" in message and ".nii.gz files and folders" in message


def test_missing_folder(ct, tmp_path):
    assert input_error(ct, tmp_path / "series").endswith("no such file or folder")


def test_not_a_dicom_file(ct, tmp_path):
    path = tmp_path / "slice.dcm"
    path.write_bytes(b"not a DICOM file")
    assert "cannot read it as ct input" in input_error(ct, path)


def test_truncated_dicom(ct, tmp_path):
    path = tmp_path / "truncated.dcm"
    data = CT_SMALL.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "pixel data" in input_error(ct, path)


def test_folder_without_dicom_files(ct, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    assert input_error(ct, tmp_path).endswith("the folder holds no DICOM files")


def test_constant_volume(ct, tmp_path):
    path = write_nifti(tmp_path / "water.nii.gz", np.zeros((40, 48, 20)))
    message = input_error(ct, path)
    assert "image is constant" in message and "nothing to encode" in message
