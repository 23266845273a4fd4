"""Chest X-ray modality: 2D radiographs from PNG/JPEG/TIFF pictures or DICOM files.

A built-in plugin that uses only the public API (``m3fm.registry``, ``m3fm.filetypes`` and
``m3fm.imaging``), exactly as a third-party modality package would.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES, is_display_image
from m3fm.registry import EncoderOptions, LabelPrompts, LabelSpec, ModalitySpec, hookimpl

# MONAI, timm and torch are imported where they are first needed, not here: discovery imports
# every plugin, and importing MONAI alone takes seconds that `m3fm plugins list` should not pay.
if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGE_SIZE = 224
"""Side of the square model input, in pixels: the size ImageNet backbones were trained at."""

DEFAULT_BACKBONE = "resnet18"
"""Small and fast on CPU; ample capacity for the few thousand radiographs of public COVID sets."""

AFFINE_DEGREES = 7.0
"""Largest rotation of the training affine, either way: patients stand a little tilted."""

AFFINE_SCALE = (0.95, 1.05)
"""Range of the training affine's zoom (above 1 enlarges the chest)."""

AFFINE_TRANSLATE = 0.04
"""Largest shift of the training affine along each axis, as a fraction of the image side."""

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

ENGLISH_NAMES = {
    "atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "effusion": "pleural effusion",
    "infiltration": "pulmonary infiltrate",
    "mass": "pulmonary mass",
    "nodule": "pulmonary nodule",
    "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "edema": "pulmonary edema",
    "emphysema": "emphysema",
    "fibrosis": "pulmonary fibrosis",
    "pleural_thickening": "pleural thickening",
    # The "Hernia" class of chest radiograph label sets is, in practice, hiatal hernia.
    "hernia": "hiatal hernia",
}
"""Label id → radiology term, singular and without article, to read well in every template."""

# Phrasings that are frequent in real English chest reports (IU X-ray counts: "no evidence
# of" 425, "negative for" 201, "consistent with" 140, "compatible with" 90, "suggestive of" 46).
POSITIVE_TEMPLATES = (
    "Findings consistent with {finding}.",
    "Findings compatible with {finding}.",
    "There is evidence of {finding}.",
    "Findings suggestive of {finding}.",
)
NEGATIVE_TEMPLATES = (
    "No {finding}.",
    "No evidence of {finding}.",
    "Negative for {finding}.",
    "There is no {finding}.",
)

COVID19_PROMPTS = LabelPrompts(
    positive=(
        "Diffuse infiltrates in the bilateral lower lungs.",
        "Bilateral peripheral ground-glass opacities, consistent with COVID-19 pneumonia.",
        "Multiple patchy ground glass shadows are seen in both lungs, with blurred borders.",
    ),
    negative=(
        "No abnormal density shadow is seen in both lungs.",
        "Dense lobar consolidation, consistent with bacterial pneumonia.",
        "Endotracheal tube and central line in place; severe ARDS.",
    ),
)
"""COVID-19 by its imaging signs: COV-CTR's reports never name the disease, they describe
bilateral ground-glass shadows (chosen on the validation split; see docs/diagnosis.md).  The CT
plugin declares the same English prompts for its `covid19`, so the two entries merge."""


def _named(label: str) -> LabelSpec:
    name = ENGLISH_NAMES[label]
    return LabelSpec(
        id=label, modalities=("cxr",), description=f"{name[0].upper()}{name[1:]}",
        prompts={"en": LabelPrompts(
            positive=tuple(t.format(finding=name) for t in POSITIVE_TEMPLATES),
            negative=tuple(t.format(finding=name) for t in NEGATIVE_TEMPLATES))},
    )


LABEL_SPECS = (
    *(_named(label) for label in LABELS if label in ENGLISH_NAMES),
    LabelSpec(id="covid19", modalities=("cxr",), description="COVID-19 pneumonia",
              prompts={"en": COVID19_PROMPTS}),
)
"""The chest X-ray labels with their English prompts (other languages add their own)."""

SAMPLE_FILES = (Path(__file__).with_name("samples") / "cxr.png",)
"""A tiny synthetic radiograph (a drawn phantom, no patient's), shipped as package data for the
conformance kit that `m3fm plugins list` runs."""

def _to_model_input(image: torch.Tensor) -> torch.Tensor:
    """Aspect-preserving fit and standardisation."""
    from m3fm.imaging import FitToSquare, standardize

    return standardize()(FitToSquare(IMAGE_SIZE)(image))


def load_cxr(path: Path) -> torch.Tensor:
    """Read one radiograph into a standardised (1, IMAGE_SIZE, IMAGE_SIZE) grey image.

    Its INTENSITY_PERCENTILES become 0 and 1, whatever the file's bit depth.
    """
    import numpy as np

    from m3fm.imaging import read_image, read_picture, scale_to_unit_

    if is_display_image(path.name) and not path.is_dir():
        image, _ = read_picture(path)  # no MONAI for a picture
    else:
        image = read_image(path).as_tensor()
    if image.ndim != 3:
        shape = tuple(image.shape[1:])
        raise ValueError(f"a chest X-ray is one 2D image; this file holds a {shape} array")
    low, high = np.percentile(image.numpy(), INTENSITY_PERCENTILES)
    return _to_model_input(scale_to_unit_(image, float(low), float(high)))


def augment_cxr(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A training view of a loaded radiograph: a random crop, then a small random affine.

    The crop is :func:`m3fm.imaging.random_crop` (a square of `CROP_SCALE` of the side, resized
    back); the affine rotates by up to AFFINE_DEGREES, zooms within AFFINE_SCALE and shifts by up
    to AFFINE_TRANSLATE of the side, about the image centre, bilinear, filling the corners it
    uncovers with the image's minimum (its background).  Every draw comes from `generator`;
    returns a new tensor of the same shape and dtype.
    """
    from m3fm.imaging import random_crop

    return random_affine(random_crop(image, generator), generator)


def random_affine(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate, zoom and shift (C, H, W) `image` by a draw from `generator` (see augment_cxr)."""
    import math

    import torch
    from torch.nn.functional import affine_grid, grid_sample

    height, width = image.shape[-2:]
    draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    angle = math.radians(AFFINE_DEGREES * (2 * draws[0] - 1))
    zoom = AFFINE_SCALE[0] + (AFFINE_SCALE[1] - AFFINE_SCALE[0]) * draws[1]
    shift_x, shift_y = (2 * AFFINE_TRANSLATE * (2 * d - 1) for d in draws[2:])  # in [-1, 1] units
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # Output -> input coordinates, in grid_sample's [-1, 1] units: a rotation in pixels is a
    # rotation in these units only once the aspect ratio is taken out.
    theta = torch.tensor([[cos, -sin * height / width, shift_x],
                          [sin * width / height, cos, shift_y]], dtype=image.dtype)
    planes = image.reshape(1, -1, height, width)
    grid = affine_grid(theta.unsqueeze(0), list(planes.shape), align_corners=False)
    background = planes.min()
    # grid_sample pads with zeros: sampling the image less its minimum pads with the minimum.
    moved = grid_sample(planes - background, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False) + background
    return moved.reshape(image.shape)


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
    augment=augment_cxr,
)


@hookimpl
def m3fm_modalities() -> list[ModalitySpec]:
    """The chest X-ray modality."""
    return [CXR]


@hookimpl
def m3fm_labels() -> list[LabelSpec]:
    """The chest X-ray labels, with English prompts."""
    return list(LABEL_SPECS)
