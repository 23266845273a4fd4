"""Hostile and unusual image files: each class of fault gets an honest one-line InputError (or a
correct image), decided from the file's header before anything large is decoded."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from image_checks import input_error, unit_range
from monai.transforms import Compose, Lambda
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from m3fm.image_headers import DEFAULT_MAX_INPUT_MB, max_input_mb
from m3fm.imaging import FitToSquare, preprocess, read_image
from m3fm.registry import PLUGIN_API_VERSION, M3fmError, ModalitySpec, get_registry

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
RGB_DICOM = Path(get_testdata_file("SC_rgb_small_odd.dcm"))
FOUR_D = "4D images (time series) are not supported; give one 3D volume"


@pytest.fixture
def ct() -> ModalitySpec:
    return get_registry().modality("ct")


@pytest.fixture
def cxr() -> ModalitySpec:
    return get_registry().modality("cxr")


def any_modality_spec(*, volumes: bool = True, **fields) -> ModalitySpec:
    """A plugin written before plugin API 1.4: no dicom_modalities, reads every file type."""
    def load(path: Path) -> torch.Tensor:
        return FitToSquare(16)(read_image(path)) + torch.linspace(0, 1, 16)

    return ModalitySpec(
        name="plain", description="a plugin without dicom_modalities",
        file_types=(".png", ".tif", ".dcm", ".nii", ".nii.gz"), accepts_directories=True,
        slice_shape=(1, 16, 16), volume_shape=(1, 2, 16, 16) if volumes else None,
        load=load, build_encoder=lambda options: None, labels=("covid19",), **fields,
    )


def ct_slice(path: Path, **tags) -> Path:
    """CT_small.dcm with some tags changed."""
    dataset = pydicom.dcmread(CT_SMALL)
    for name, value in tags.items():
        setattr(dataset, name, value)
    dataset.save_as(path)
    return path


def write_series(folder: Path, slices: int, *, uid: str | None = None, start: int = 0,
                 **tags) -> str:
    """`slices` axial CT_small slices of one series into `folder`; returns the series UID."""
    folder.mkdir(exist_ok=True)
    uid = uid or generate_uid()
    template = pydicom.dcmread(CT_SMALL)
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    for index in range(slices):
        ct_slice(folder / f"{uid[-6:]}-{start + index:03d}.dcm", SeriesInstanceUID=uid,
                 SOPInstanceUID=generate_uid(), InstanceNumber=start + index + 1,
                 ImagePositionPatient=[x, y, z + 2.5 * index], **tags)
    return uid


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small 8x8 PNG whose header claims width x height (with a valid header checksum)."""
    Image.new("L", (8, 8), 100).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose start-of-frame header claims width x height."""
    Image.new("L", (8, 8), 100).save(path, quality=90)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def nifti_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """A NIfTI header declaring `shape` (uint8), followed by a few bytes of data only."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 1000)
    return path


def no_decoding(monkeypatch) -> None:
    """Make any pixel decoding fail loudly, to prove a refusal came from the header alone."""
    def decoded(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", decoded)
    monkeypatch.setattr("nibabel.arrayproxy.ArrayProxy.__array__", decoded)
    monkeypatch.setattr("pydicom.dataset.Dataset.pixel_array", property(decoded))


# --- 1. a DICOM folder is one series ---------------------------------------------------------


def test_folder_with_two_series_is_refused_listing_each(ct, tmp_path):
    folder = tmp_path / "study"
    chest = write_series(folder, 3, SeriesDescription="CHEST 5mm")
    lung = write_series(folder, 2, start=3, SeriesDescription="LUNG 1mm")
    message = input_error(ct, folder)
    assert "holds 2 DICOM series" in message and "one series per folder" in message
    assert f"{chest} (CT, 'CHEST 5mm', 3 files)" in message
    assert f"{lung} (CT, 'LUNG 1mm', 2 files)" in message
    with pytest.raises(ValueError, match="holds 2 DICOM series"):
        read_image(folder)


def test_one_series_folder_still_reads(ct, tmp_path):
    write_series(tmp_path / "series", 3)
    assert preprocess(ct, tmp_path / "series").shape == (1, 32, 224, 224)


# --- 2. the DICOM Modality tag is checked against the plugin ----------------------------------


def test_plugin_api_version_and_declared_dicom_modalities(ct, cxr):
    assert PLUGIN_API_VERSION == "1.7"
    assert ct.dicom_modalities == ("CT",) and cxr.dicom_modalities == ("CR", "DX")
    assert any_modality_spec().dicom_modalities == ()


def test_dicom_modalities_are_dicom_codes():
    with pytest.raises(ValueError, match="DICOM Modality code"):
        any_modality_spec(dicom_modalities=("ct",))


@pytest.mark.parametrize("code", ["MR", "PT", "US"])
def test_other_modality_given_as_ct_is_refused(ct, tmp_path, code):
    path = ct_slice(tmp_path / f"{code}.dcm", Modality=code)
    message = input_error(ct, path)
    assert f"DICOM Modality (0008,0060) is '{code}'" in message
    assert "modality 'ct' reads CT" in message
    assert f"no installed modality plugin declares {code}" in message


def test_refusal_names_the_plugin_that_reads_the_modality(ct, cxr, tmp_path):
    radiograph = ct_slice(tmp_path / "cr.dcm", Modality="CR")
    assert "read it with modality 'cxr'" in input_error(ct, radiograph)
    assert "read it with modality 'ct'" in input_error(cxr, CT_SMALL)
    assert preprocess(cxr, radiograph).shape == (1, 224, 224)


def test_series_modality_is_checked(ct, tmp_path):
    write_series(tmp_path / "mr", 2, Modality="MR")
    assert "is 'MR'" in input_error(ct, tmp_path / "mr")


def test_plugin_without_dicom_modalities_reads_any(tmp_path):
    assert preprocess(any_modality_spec(), MR_SMALL).shape == (1, 16, 16)


def test_missing_modality_tag_is_read_with_a_warning(ct, tmp_path, caplog):
    dataset = pydicom.dcmread(CT_SMALL)
    del dataset.Modality
    dataset.save_as(tmp_path / "untagged.dcm")
    with caplog.at_level(logging.WARNING, logger="m3fm"):
        assert preprocess(ct, tmp_path / "untagged.dcm").shape == (1, 224, 224)
    assert "no DICOM Modality (0008,0060)" in caplog.text


# --- 3. pictures are read with their real range ------------------------------------------------


def three_levels(low: float, middle: float, high: float, dtype=np.uint8) -> np.ndarray:
    """Columns of `low`, `middle` and `high` values, 60 x 90 pixels."""
    pixels = np.full((60, 90), low, dtype)
    pixels[:, 30:60] = middle
    pixels[:, 60:] = high
    return pixels


def picture(mode: str) -> Image.Image:
    """A picture in PIL `mode` showing black, mid grey (about 50% or 25%) and white columns."""
    if mode == "1":  # a threshold, not dithering: mid grey (128) becomes white
        return Image.fromarray(three_levels(0, 128, 255)).convert(mode, dither=Image.Dither.NONE)
    if mode in ("L", "P", "LA", "RGB", "RGBA", "CMYK"):
        return Image.fromarray(three_levels(0, 128, 255)).convert(mode)
    if mode == "I;16":
        return Image.fromarray(three_levels(2000, 17000, 62000, np.uint16))
    if mode == "I;16B":
        return Image.frombytes(mode, (90, 60), three_levels(0, 16384, 65536 - 1, ">u2").tobytes())
    if mode == "I":
        return Image.fromarray(three_levels(-50000, 0, 150000, np.int32))
    return Image.fromarray(three_levels(-1.0, 0.0, 3.0, np.float32))  # F


# (mode, suffix, expected grey of the middle column after scaling)
PICTURES = [
    ("L", ".png", 128 / 255), ("1", ".png", 1.0), ("P", ".png", 128 / 255),
    ("LA", ".png", 128 / 255), ("RGB", ".jpg", 128 / 255), ("RGBA", ".png", 128 / 255),
    ("CMYK", ".tiff", 128 / 255), ("I;16", ".png", 0.25), ("I;16B", ".tif", 0.25),
    ("I", ".tif", 0.25), ("F", ".tif", 0.25),
]


@pytest.mark.parametrize(("mode", "suffix", "middle"), PICTURES, ids=[p[0] for p in PICTURES])
def test_every_picture_mode_gives_its_grey_levels(ct, cxr, tmp_path, mode, suffix, middle):
    path = tmp_path / f"picture{suffix}"
    picture(mode).save(path)
    image = unit_range(preprocess(ct, path))[0]
    columns = image[112, [40, 112, 184]]  # 60 x 90 fitted to 224: rows 75..149
    expected = torch.tensor([0.0, middle, 1.0])
    assert torch.allclose(columns, expected, atol=0.02), (Image.open(path).mode, columns)
    radiograph = unit_range(preprocess(cxr, path))[0, 112, [40, 112, 184]]
    assert radiograph[0] < radiograph[1] <= radiograph[2] and radiograph[2] > radiograph[0] + 0.5


def test_sixteen_bit_picture_above_eight_bits_is_not_called_constant(ct, tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(np.tile(np.linspace(300, 900, 64).astype(np.uint16), (64, 1))).save(path)
    image = unit_range(preprocess(ct, path))[0, 112]
    assert image[:2].max() < 0.02 and image[-2:].min() > 0.98  # 300 and 900 are 0 and 1
    assert torch.all(image.diff() >= -1e-6)


def test_tiff_is_a_display_picture(ct, cxr):
    assert {".tif", ".tiff"} <= set(ct.file_types) and {".tif", ".tiff"} <= set(cxr.file_types)


def test_multi_page_tiff_is_refused(ct, tmp_path):
    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(three_levels(0, 100, 200)) for _ in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert "holds 3 pictures; give one" in input_error(ct, path)


# --- 4. bounded memory -------------------------------------------------------------------------


def test_default_budget_and_environment_override(monkeypatch):
    monkeypatch.delenv("M3FM_MAX_INPUT_MB", raising=False)
    assert max_input_mb() == DEFAULT_MAX_INPUT_MB
    monkeypatch.setenv("M3FM_MAX_INPUT_MB", "2048")
    assert max_input_mb() == 2048
    monkeypatch.setenv("M3FM_MAX_INPUT_MB", "lots")
    with pytest.raises(M3fmError, match="M3FM_MAX_INPUT_MB must be a positive number"):
        max_input_mb()


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (lambda p: png_declaring(p / "bomb.png", 12000, 12000), "12000 × 12000 picture"),
        (lambda p: jpeg_declaring(p / "bomb.jpg", 30000, 20000), "30000 × 20000 picture"),
        (lambda p: nifti_declaring(p / "bomb.nii", (1024, 1024, 512)), "1024 × 1024 × 512 volume"),
        (lambda p: ct_slice(p / "bomb.dcm", Rows=8192, Columns=8192, NumberOfFrames=40),
         "40 frames of 8192 × 8192"),
    ],
    ids=["png", "jpeg", "nifti", "dicom"],
)
def test_huge_declared_size_is_refused_from_the_header(ct, tmp_path, monkeypatch, make, declared):
    monkeypatch.delenv("M3FM_MAX_INPUT_MB", raising=False)
    path = make(tmp_path)
    no_decoding(monkeypatch)
    message = input_error(ct, path)
    assert declared in message
    assert f"over the limit of {DEFAULT_MAX_INPUT_MB} MB per input" in message
    assert "set M3FM_MAX_INPUT_MB to raise it" in message


def test_series_size_is_summed_over_its_files(ct, tmp_path, monkeypatch):
    write_series(tmp_path / "series", 4)  # 4 slices of 128 x 128: 0.26 MB as float32
    monkeypatch.setenv("M3FM_MAX_INPUT_MB", "0.2")
    assert preprocess(ct, CT_SMALL).shape == (1, 224, 224)  # one slice is within the limit
    message = input_error(ct, tmp_path / "series")
    assert "4 slices of 128 × 128" in message and "over the limit of 0.2 MB" in message


def test_the_budget_not_pillows_bomb_guard_decides(cxr, tmp_path, monkeypatch):
    monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 1000)  # warns over 1000, refuses 2000
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.fromarray(three_levels(0, 100, 200)[:20, :70]).save(small)  # 1400 pixels
    Image.fromarray(three_levels(0, 100, 200)).save(large)  # 5400 pixels
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        assert preprocess(cxr, small).shape == (1, 224, 224)
        assert preprocess(cxr, large).shape == (1, 224, 224)
        monkeypatch.setenv("M3FM_MAX_INPUT_MB", "0.02")  # 5000 pixels
        assert "a 90 × 60 picture (0.0216 MB as float32)" in input_error(cxr, large)
    assert not raised


def test_library_warnings_are_logged_not_printed(ct, tmp_path, caplog, capfd):
    dataset = pydicom.dcmread(CT_SMALL)
    del dataset.ImageOrientationPatient  # MONAI's reader warns that it cannot derive an affine
    dataset.save_as(tmp_path / "no-orientation.dcm")
    with warnings.catch_warnings(record=True) as raised, caplog.at_level(logging.WARNING, "m3fm"):
        warnings.simplefilter("always")
        preprocess(ct, tmp_path / "no-orientation.dcm")
    printed = capfd.readouterr().err.splitlines()  # only m3fm's own, if the CLI's handler is on
    assert not raised and all(line.startswith("m3fm: warning: ") for line in printed)
    assert "ImageOrientationPatient" in caplog.text


def test_resampling_a_volume_with_huge_voxels_stays_small(ct, tmp_path):
    volume = np.random.default_rng(0).normal(0, 500, (10, 10, 10)).astype(np.float32)
    path = tmp_path / "coarse.nii"
    nib.save(nib.Nifti1Image(volume, np.diag([300.0, 300.0, 300.0, 1.0])), path)
    assert preprocess(ct, path).shape == (1, 32, 224, 224)


@pytest.mark.slow
def test_huge_png_is_refused_with_little_memory(tmp_path, monkeypatch):
    """A real 12000 x 12000 PNG (about 170 KB) costs little memory to refuse."""
    monkeypatch.delenv("M3FM_MAX_INPUT_MB", raising=False)
    path = tmp_path / "blank.png"
    Image.new("L", (12000, 12000)).save(path)
    refused, peak = peak_rss_mb(path)
    assert "12000 × 12000 picture" in refused
    _, baseline = peak_rss_mb(tmp_path / "absent.png")
    assert peak - baseline < 50


def peak_rss_mb(path: Path, modality: str = "ct") -> tuple[str, int]:
    """(outcome, peak resident MB) of a fresh process that imports m3fm and reads `path`."""
    script = (
        "import resource, sys\n"
        "from m3fm.imaging import preprocess\n"
        "from m3fm.registry import InputError, get_registry\n"
        f"spec = get_registry().modality({modality!r})\n"
        "try:\n"
        f"    print(tuple(preprocess(spec, {str(path)!r}).shape))\n"
        "except InputError as error:\n"
        "    print(error)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=600)
    outcome, peak = result.stdout.splitlines()
    return outcome, int(peak)


@pytest.mark.slow
def test_input_just_under_the_default_budget_peaks_under_2_gb(tmp_path, monkeypatch):
    """The costliest format: a DICOM series of 366 slices of 512 x 512 (384 MB as float32)."""
    monkeypatch.delenv("M3FM_MAX_INPUT_MB", raising=False)
    folder = tmp_path / "series"
    folder.mkdir()
    template = pydicom.dcmread(CT_SMALL)
    template.Rows = template.Columns = 512
    template.PixelSpacing = [0.7, 0.7]
    template.PixelData = np.random.default_rng(0).integers(
        0, 2000, (512, 512), dtype=np.int16).tobytes()
    uid = generate_uid()
    for index in range(DEFAULT_MAX_INPUT_MB * 10**6 // (512 * 512 * 4)):
        template.SeriesInstanceUID, template.SOPInstanceUID = uid, generate_uid()
        template.InstanceNumber, template.ImagePositionPatient = index + 1, [0, 0, float(index)]
        template.save_as(folder / f"{index:04d}.dcm")
    outcome, peak = peak_rss_mb(folder)
    print(f"peak resident memory: {peak} MB")
    assert outcome == "(1, 32, 224, 224)" and peak < 2000


# --- 5. honest messages ------------------------------------------------------------------------


def test_monai_transform_failure_names_the_real_cause(tmp_path):
    def divide(image):
        raise ZeroDivisionError("spacing of 0 mm")

    spec = any_modality_spec().model_copy(
        update={"load": lambda path: Compose([Lambda(divide)])(read_image(path))})
    message = input_error(spec, CT_SMALL)
    assert message.endswith("cannot read it as plain input: spacing of 0 mm")


def test_four_d_nifti_is_not_blamed_on_the_plugin(ct, tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(10, 10, 10, 3).astype(np.float32), np.eye(4)), path)
    message = input_error(ct, path)
    assert message.endswith(f"declares a 10 × 10 × 10 × 3 image: {FOUR_D}")


def test_four_d_dicom_series_is_refused(ct, tmp_path):
    uid = write_series(tmp_path / "dynamic", 3)
    write_series(tmp_path / "dynamic", 3, uid=uid, start=3)  # the same 3 positions again
    assert FOUR_D in input_error(ct, tmp_path / "dynamic")


def test_series_of_multi_frame_files_is_four_d(ct, tmp_path):
    folder = tmp_path / "multiframe"
    folder.mkdir()
    uid = generate_uid()
    for index in range(2):
        dataset = pydicom.dcmread(CT_SMALL)
        dataset.NumberOfFrames = 2
        dataset.PixelData = dataset.PixelData * 2
        dataset.SeriesInstanceUID, dataset.InstanceNumber = uid, index + 1
        dataset.save_as(folder / f"{index}.dcm")
    assert FOUR_D in input_error(ct, folder)


def test_volume_given_to_a_two_d_plugin_is_refused_by_the_engine(tmp_path):
    path = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(np.random.rand(10, 12, 5).astype(np.float32), np.eye(4)), path)
    message = input_error(any_modality_spec(volumes=False), path)
    assert message.endswith(
        "modality 'plain' reads 2D images; this file holds a 10 × 12 × 5 volume")


def test_colour_dicom_is_read_as_one_grey_channel(tmp_path):
    image = read_image(RGB_DICOM)
    assert image.shape == (1, *pydicom.dcmread(RGB_DICOM).pixel_array.shape[:2])
    assert preprocess(any_modality_spec(), RGB_DICOM).shape == (1, 16, 16)


def test_series_mixing_slice_sizes_is_refused(ct, tmp_path):
    uid = write_series(tmp_path / "mixed", 2)
    dataset = pydicom.dcmread(MR_SMALL)
    dataset.SeriesInstanceUID, dataset.Modality = uid, "CT"
    dataset.save_as(tmp_path / "mixed" / "other.dcm")
    assert "mixes slice sizes: 128 × 128 (2 files), 64 × 64 (1 file)" in input_error(
        ct, tmp_path / "mixed")
