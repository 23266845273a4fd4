"""Chest X-ray modality: 2D radiographs from PNG/JPEG/TIFF pictures or DICOM files.

A built-in plugin that uses only the public API (``m3fm.registry``, ``m3fm.filetypes`` and
``m3fm.imaging``), exactly as a third-party modality package would.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES
from m3fm.registry import EncoderOptions, ModalitySpec, hookimpl

# MONAI, timm and torch are imported where they are first needed, not here: discovery imports
# every plugin, and importing MONAI alone takes seconds that `m3fm plugins list` should not pay.
if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose
    from torch import nn

IMAGE_SIZE = 224
"""Side of the square model input, in pixels: the size ImageNet backbones were trained at."""

DEFAULT_BACKBONE = "resnet18"
"""Small and fast on CPU; ample capacity for the few thousand radiographs of public COVID sets."""

INTENSITY_PERCENTILES = (0.5, 99.5)
"""Intensities are clipped to these percentiles before scaling to [0, 1], so that burned-in
text or a few hot pixels of a 12-bit DICOM do not squeeze the lungs' contrast."""

LABELS = (
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pleural_thickening",
    "hernia",
    "covid19",
)
"""The 14 ChestX-ray14 findings, plus COVID-19."""

SAMPLE_FILES = (Path(__file__).with_name("samples") / "cxr.png",)
"""A tiny synthetic radiograph (a drawn phantom, no patient's), shipped as package data for the
conformance kit that `m3fm plugins list` runs."""

@functools.cache
def _to_model_input() -> Compose:
    """Aspect-preserving fit and standardisation, built on the first load."""
    from monai.transforms import Compose

    from m3fm.imaging import FitToSquare, standardize

    return Compose([FitToSquare(IMAGE_SIZE), standardize()])


def load_cxr(path: Path) -> torch.Tensor:
    """Read one radiograph into a standardised (1, IMAGE_SIZE, IMAGE_SIZE) grey image.

    Its INTENSITY_PERCENTILES become 0 and 1, whatever the file's bit depth.
    """
    import numpy as np

    from m3fm.imaging import read_image, scale_to_unit_

    image = read_image(path)
    if image.ndim != 3:
        shape = tuple(image.shape[1:])
        raise ValueError(f"a chest X-ray is one 2D image; this file holds a {shape} array")
    low, high = np.percentile(image.as_tensor().numpy(), INTENSITY_PERCENTILES)
    return _to_model_input()(scale_to_unit_(image, float(low), float(high)))


def build_cxr_encoder(options: EncoderOptions) -> nn.Module:
    """A grey-input timm backbone mapping (B, 1, H, W) radiographs to pooled features."""
    from m3fm.imaging import timm_encoder

    return timm_encoder(options, default_backbone=DEFAULT_BACKBONE, in_chans=1)


CXR = ModalitySpec(
    name="cxr",
    description="Chest X-ray radiographs (PNG, JPEG, TIFF, DICOM)",
    file_types=DISPLAY_IMAGE_SUFFIXES + DICOM_SUFFIXES,
    slice_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
    load=load_cxr,
    build_encoder=build_cxr_encoder,
    labels=LABELS,
    sample_files=SAMPLE_FILES,
    dicom_modalities=("CR", "DX"),
)


@hookimpl
def m3fm_modalities() -> list[ModalitySpec]:
    """The chest X-ray modality."""
    return [CXR]
