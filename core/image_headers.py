"""What an image input declares about itself, read without decoding a pixel, and the memory
budget it is held to.

A small file can declare a canvas or a volume that takes gigabytes to decode, a folder can hold
several DICOM series, a NIfTI file a time series: all of it is in the headers.  Reading them
first lets :mod:`m3fm.imaging` refuse such an input with the real reason before it decodes
anything (:func:`read_header`, :func:`check_size`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES, NIFTI_SUFFIXES
from m3fm.registry import M3fmError

if TYPE_CHECKING:  # imported where a volume or DICOM file is read: a picture needs neither
    import pydicom

DEFAULT_MAX_INPUT_MB = 384
"""Default memory budget of one input (`M3FM_MAX_INPUT_MB`), in MB of its pixels as float32.

384 MB holds a 512 x 512 x 384 CT volume or a 9800 x 9800 picture.  Reading and preprocessing
take about twice the budget at their peak: a process that has imported m3fm (0.9 GB) and reads
an input just under it peaks at about 1.75 GB of resident memory (measured on the costliest
format, a DICOM series; pictures and NIfTI volumes take less), well under 2 GB."""


_PICTURE_FORMATS = ("PNG", "JPEG", "TIFF")
"""Pillow formats of display pictures (JPEG includes MPO, a JPEG with extra images)."""
FOUR_D = "4D images (time series) are not supported; give one 3D volume"


def max_input_mb() -> float:
    """The memory budget of one input in MB (10^6 bytes) of pixels as float32.

    Inputs that declare more are refused from their header, before anything is decoded, because
    a small file can declare a canvas that takes gigabytes to decode.  Set `M3FM_MAX_INPUT_MB`
    to change it.
    """
    text = os.environ.get("M3FM_MAX_INPUT_MB")
    if text is None:
        return DEFAULT_MAX_INPUT_MB
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not (limit > 0 and math.isfinite(limit)):
        raise M3fmError(f"M3FM_MAX_INPUT_MB must be a positive number of megabytes, not {text!r}")
    return limit


class RefusedInput(ValueError):
    """An input the file itself rules out (4D, several series, over the budget): the message
    says why and needs no "cannot read it" in front."""


@dataclass(frozen=True)
class Header:
    """What an input declares about itself, read without decoding its pixels."""

    described: str  # "a 512 × 512 picture", "a series of 40 slices of 512 × 512"
    values: int  # numbers the reader holds once it has decoded the input
    rank: int  # spatial dimensions: 2 or 3
    dicom_modalities: tuple[str, ...] = ()  # Modality tag values, "" for a file without one
    colour: bool = False  # a DICOM image with R, G and B samples per pixel
    value_bytes: int = 4  # float32, or 8 where the file stores 8-byte values read as such


def read_header(path: Path) -> Header | None:
    """What the input declares (None for file types m3fm does not read itself)."""
    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_SUFFIXES):
        return _dicom_header(path)
    if name.endswith(NIFTI_SUFFIXES):
        return _nifti_header(path)
    if name.endswith(DISPLAY_IMAGE_SUFFIXES):
        return _picture_header(path)
    return None


def check_size(header: Header, limit_mb: float) -> None:
    declared_mb = header.values * header.value_bytes / 1e6
    if declared_mb > limit_mb:
        shown = f"{declared_mb:.3g}" if declared_mb < 100 else f"{declared_mb:.0f}"
        kind = "float32" if header.value_bytes == 4 else f"{header.value_bytes}-byte values"
        raise RefusedInput(
            f"declares {header.described} ({shown} MB as {kind}), over the limit of "
            f"{limit_mb:g} MB per input; set M3FM_MAX_INPUT_MB to raise it"
        )


def _dims(shape: tuple[int, ...]) -> str:
    return " × ".join(str(n) for n in shape)


def _picture_header(path: Path) -> Header:
    with open_picture(path) as picture:  # reads the header only
        width, height = picture.size
        pages = picture.n_frames if picture.format == "TIFF" else 1
    if pages > 1:
        raise RefusedInput(f"holds {pages} pictures; give one picture per file")
    return Header(f"a {width} × {height} picture", width * height, rank=2)


def _nifti_header(path: Path) -> Header:
    import nibabel

    volume = nibabel.load(path)  # reads the header; the voxels stay on disk
    shape = tuple(int(n) for n in volume.shape)
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a volume, as MONAI reads it
        shape = shape[:-1]
    if len(shape) > 3:
        kind = FOUR_D if len(shape) == 4 else (
            f"{len(shape)}D images are not supported; give one 3D volume")
        raise RefusedInput(f"declares a {_dims(shape)} image: {kind}")
    if len(shape) < 2:
        raise RefusedInput(
            f"declares a {len(shape)}D array of {math.prod(shape)} values, not an image")
    if min(shape) < 1:
        raise RefusedInput(f"declares an empty {_dims(shape)} image")
    dtype = volume.get_data_dtype()
    if dtype.kind not in "biuf":
        kind = volume.header.get_value_label("datatype")
        raise RefusedInput(f"holds {kind} voxels; m3fm reads grey levels (integer or float)")
    kind = "volume" if len(shape) == 3 else "image"
    return Header(f"a {_dims(shape)} {kind}", math.prod(shape), rank=len(shape),
                   value_bytes=max(4, dtype.itemsize))


class _DicomImage(NamedTuple):
    """The pixel layout one DICOM file declares."""

    rows: int
    columns: int
    frames: int
    samples: int  # per pixel: 1 grey, 3 colour
    bits: int  # allocated per sample
    modality: str  # "" when the file has no Modality tag


def _dicom_header(path: Path) -> Header:
    """A DICOM file, or a folder of one series (files in other series are refused, not merged)."""
    import pydicom

    if not path.is_dir():
        image = _dicom_image(pydicom.dcmread(path, stop_before_pixels=True), "the file")
        described = (f"{image.frames} frames of {image.rows} × {image.columns}"
                     if image.frames > 1 else f"a {image.rows} × {image.columns} DICOM image")
        return Header(described, _dicom_values(path, image), rank=3 if image.frames > 1 else 2,
                       dicom_modalities=(image.modality,), colour=image.samples == 3,
                       value_bytes=4 if image.bits <= 16 else 8)
    # Only regular files (opening a FIFO would wait), as MONAI's reader lists them (no dotfiles).
    files = sorted(entry for entry in path.iterdir()
                   if not entry.name.startswith(".") and entry.is_file()
                   and pydicom.misc.is_dicom(entry))
    if not files:
        raise RefusedInput("the folder holds no DICOM files")
    datasets = {}
    for file in files:
        try:
            datasets[file] = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as exc:
            raise ValueError(f"{file.name}: {' '.join(str(exc).split())}") from exc
    _check_one_series(datasets)
    if len(files) == 1:
        return _dicom_header(files[0])
    images = [_dicom_image(dataset, file.name, in_folder=True)
              for file, dataset in datasets.items()]
    sizes = Counter(f"{image.rows} × {image.columns}" for image in images)
    if len(sizes) > 1:
        listed = ", ".join(f"{size} ({n} file{'s' * (n > 1)})" for size, n in sizes.most_common())
        raise RefusedInput(f"the series mixes slice sizes: {listed}")
    if any(image.frames > 1 for image in images):
        raise RefusedInput(f"the series has {len(files)} multi-frame files: {FOUR_D}")
    if any(image.samples != 1 for image in images):
        raise RefusedInput("the series holds colour slices; m3fm reads grey series")
    positions = {_position(dataset) for dataset in datasets.values()}
    if None not in positions and len(positions) < len(files):
        raise RefusedInput(
            f"the series has {len(files)} files at {len(positions)} slice positions: {FOUR_D}")
    return Header(
        f"a series of {len(files)} slices of {next(iter(sizes))}",
        sum(_dicom_values(file, image) for file, image in zip(files, images, strict=True)),
        rank=3,
        dicom_modalities=tuple(sorted({image.modality for image in images})),
        value_bytes=4 if max(image.bits for image in images) <= 16 else 8,
    )


def _check_one_series(datasets: dict[Path, pydicom.Dataset]) -> None:
    """Refuse a folder holding several series, listing them, instead of stacking them."""
    series: dict[str, list[pydicom.Dataset]] = {}
    for dataset in datasets.values():
        series.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    if len(series) < 2:
        return

    def listed(uid: str, members: list[pydicom.Dataset]) -> str:
        first = members[0]
        about = [str(first.get("Modality", "") or "no Modality")]
        if first.get("SeriesDescription"):
            about.append(repr(str(first.SeriesDescription)))
        about.append(f"{len(members)} file{'s' * (len(members) > 1)}")
        return f"{uid or 'no SeriesInstanceUID'} ({', '.join(about)})"

    raise RefusedInput(
        f"the folder holds {len(series)} DICOM series; give one series per folder: "
        + "; ".join(listed(uid, members) for uid, members in series.items())
    )


def _dicom_image(dataset: pydicom.Dataset, name: str, in_folder: bool = False) -> _DicomImage:
    if "Rows" not in dataset or "Columns" not in dataset:
        keep = "; keep only the series' images in the folder" if in_folder else ""
        raise RefusedInput(f"{name} holds no image (it has no Rows and Columns){keep}")
    image = _DicomImage(
        *(_count(dataset, keyword) for keyword in
          ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated")),
        modality=str(dataset.get("Modality", "") or "").strip().upper(),
    )
    if image.samples not in (1, 3):
        raise RefusedInput(f"{name} has {image.samples} samples per pixel; m3fm reads grey or RGB "
                       "images")
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric.startswith("PALETTE"):
        raise RefusedInput(f"{name} is a {photometric} image; m3fm reads grey or RGB images")
    return image


def _dicom_values(path: Path, image: _DicomImage) -> int:
    """The values pydicom decodes: as declared, or as many as the file holds, if more (pydicom
    returns the extra frames of a file that holds more than NumberOfFrames says).  A megabyte
    of the file is allowed for its header."""
    declared = image.rows * image.columns * image.frames * image.samples
    return max(declared, (path.stat().st_size - 2**20) // max(1, image.bits // 8))


def _count(dataset: pydicom.Dataset, keyword: str) -> int:
    """A positive count from the header; all but Rows and Columns may be absent."""
    value = dataset.get(keyword)
    if value in (None, "") and keyword not in ("Rows", "Columns"):
        return 1 if keyword != "BitsAllocated" else 16
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise RefusedInput(f"{keyword} is {value!r}, not a positive number")
    return count


def _position(dataset: pydicom.Dataset) -> tuple[float, ...] | None:
    """ImagePositionPatient to the micrometre, or None when it is missing or malformed."""
    try:
        return tuple(round(float(v), 3) for v in dataset.ImagePositionPatient)
    except (AttributeError, TypeError, ValueError):
        return None


def open_picture(path: Path) -> Image.Image:
    """Open a picture lazily, with m3fm's budget instead of Pillow's decompression-bomb guard.

    Pillow warns above 89 million pixels and refuses twice that, before the caller can see the
    size; m3fm checks the declared size against its own budget, which M3FM_MAX_INPUT_MB sets,
    so Pillow's guard is off while the file is opened (decoding comes later and is unaffected).
    Only the picture formats m3fm reads are tried, whatever the suffix says: Pillow would
    otherwise try every format it knows, some of which run other programs (Ghostscript for EPS).
    """
    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path, formats=_PICTURE_FORMATS)
    finally:
        Image.MAX_IMAGE_PIXELS = guard


