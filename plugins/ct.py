"""Computed tomography modality: 2D slices and 3D volumes, windowed in Hounsfield units.

Inputs are 2D slices (PNG/JPEG/TIFF pictures as published in papers, or one DICOM slice in HU)
and 3D volumes (NIfTI files, DICOM series folders).  Both go through one 2D backbone: a volume is
encoded slice by slice (:class:`m3fm.imaging.SlicePooledEncoder`).  :func:`ct_spec` builds
variants, e.g. a mediastinal window::

    ct_spec(name="ct-mediastinum", window=(40, 400))

A built-in plugin that uses only the public API (``m3fm.registry``, ``m3fm.filetypes`` and
``m3fm.imaging``), exactly as a third-party modality package would.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES, NIFTI_SUFFIXES, is_display_image
from m3fm.registry import EncoderOptions, LabelPrompts, LabelSpec, ModalitySpec, hookimpl

# MONAI, timm and torch are imported where they are first needed, not here: discovery imports
# every plugin, and importing MONAI alone takes seconds that `m3fm plugins list` should not pay.
if TYPE_CHECKING:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, ScaleIntensityRange
    from torch import nn

LUNG_WINDOW = (-600.0, 1500.0)
"""(level, width) in HU: shows -1350..150 HU, from air through lung tissue to soft tissue."""

IMAGE_SIZE = 224
"""Side of the square slice, in pixels: the size ImageNet backbones were trained at."""

VOLUME_DEPTH = 32
"""Axial slices a volume is resampled to, evenly spread over the scan; each is encoded in 2D."""

VOLUME_SPACING_MM = (5.0, 0.75, 0.75)
"""Voxel size (slice, row, column) every volume is resampled to before its final fit.

5 mm is the slice thickness radiologists read (thin-slice scans shrink early, which keeps the
later steps cheap); 0.75 mm square pixels, about chest CT's native resolution, keep anatomy in
proportion without losing detail before the anti-aliased fit to IMAGE_SIZE.
"""

VOLUME_AXES = "SPL"
"""Axis codes giving (D, H, W) = (inferior to superior, anterior to posterior, patient right to
left): axial slices as a radiologist views them, so volumes look like the 2D training slices."""

RESAMPLED_SIDE_LIMIT = 512
"""Most pixels along a slice's side when a volume is resampled to its spacing.

A larger field of view (above 384 mm at 0.75 mm) is resampled with proportionally larger
pixels, still twice as fine as the final fit to IMAGE_SIZE keeps; and a header declaring huge
voxels cannot make the resampled grid take gigabytes."""

RESAMPLED_SLICE_LIMIT = 4 * VOLUME_DEPTH
"""Most slices after resampling: 640 mm at 5 mm, more than a chest, abdomen and pelvis."""

RESAMPLED_GROWTH_LIMIT = 4
"""Most times resampling multiplies the voxels along an axis: finer adds voxels, not detail."""

WINDOW_LEVEL_JITTER = 0.05
"""Largest shift of the window level in training, either way, as a fraction of its width."""

WINDOW_WIDTH_JITTER = (0.9, 1.1)
"""Range of the factor that scales the window width in training."""

DISPLAY_RANGE = (0.0, 255.0)
"""Grey levels of an 8-bit display picture, which a viewer has already windowed.

The scaling rule for display pictures: 8-bit ones (grey, palette, bilevel, RGB and their alpha
variants, all read as 0..255 luma) map 0..255 to 0..1 as they are, so the window the picture
was rendered with is kept.  Pictures with more bits (16-bit grey PNG or TIFF, 32-bit integer or
float TIFF) carry no window and no fixed range, so their own minimum and maximum map to 0..1;
clipping them to 255 would blank them."""

DEFAULT_BACKBONE = "resnet18"
"""Small and fast on CPU; a volume runs VOLUME_DEPTH slices through it at once."""

LABELS = ("covid19",)

COVID19 = LabelSpec(
    id="covid19", modalities=("ct",), description="COVID-19 pneumonia",
    # By its imaging signs: COV-CTR's reports never name the disease, they describe bilateral
    # ground-glass shadows (chosen on the validation split; see docs/diagnosis.md).  The chest
    # X-ray plugin declares the same English prompts, so the two entries merge.
    prompts={"en": LabelPrompts(
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
    )},
)
"""The CT label, with English prompts (other languages add their own)."""

SAMPLE_FILES = (Path(__file__).with_name("samples") / "ct.png",)
"""A tiny synthetic slice in the lung window (a drawn phantom, no patient's), shipped as package
data for the conformance kit that `m3fm plugins list` runs."""


def hu_window(level: float, width: float) -> ScaleIntensityRange:
    """Map the HU range [level - width/2, level + width/2] to [0, 1], clipping outside values."""
    from monai.transforms import ScaleIntensityRange

    return ScaleIntensityRange(
        a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True
    )


def ct_spec(
    *,
    name: str = "ct",
    description: str = "Computed tomography: 2D slices (PNG, JPEG, TIFF, DICOM) and 3D volumes "
    "(NIfTI, DICOM series folders)",
    window: tuple[float, float] = LUNG_WINDOW,
    image_size: int = IMAGE_SIZE,
    depth: int = VOLUME_DEPTH,
    spacing_mm: tuple[float, float, float] = VOLUME_SPACING_MM,
) -> ModalitySpec:
    """A CT modality spec; change the HU window (level, width), the shapes or the voxel size.

    Build variants with this factory rather than ``spec.model_copy``: the loader depends on
    the window and the shapes, so they have to change together.
    """

    @functools.cache
    def volume_pipeline() -> Compose:
        """The windowing, slice resampling, fit and standardisation of a resampled volume,
        built on the first volume (MONAI is imported then, not for a slice)."""
        from monai.transforms import Compose, Resize

        from m3fm.imaging import FitToSquare, standardize

        return Compose([
            hu_window(*window),
            Resize(spatial_size=(depth, -1, -1), mode="trilinear"),  # slice axis only
            FitToSquare(image_size),
            standardize(),
        ])

    def fit_slice(image: torch.Tensor) -> torch.Tensor:
        from m3fm.imaging import FitToSquare, standardize

        return standardize()(FitToSquare(image_size)(image))

    def orient_and_resample(volume: MetaTensor) -> MetaTensor:
        """Turn to VOLUME_AXES and resample to `spacing_mm`, coarser where the grid would exceed
        the resampling limits.

        The grid that orienting, then resampling gives is worked out from the metadata alone
        (MONAI's lazy mode), and the volume is resampled onto it in one step from the file's own
        voxel axes: same values, but no oriented full-size copy of the volume is made.
        """
        import numpy as np
        from monai.transforms import Orientation, Spacing, SpatialResample
        from nibabel.orientations import io_orientation

        # The anatomical axis of each voxel axis: 0 right-left, 1 anterior-posterior,
        # 2 inferior-superior (voxel order where the affine is degenerate).
        anatomy = io_orientation(volume.affine.numpy())[:, 0]
        if np.isnan(anatomy).any():
            anatomy = np.arange(3)
        along = dict(zip(anatomy.astype(int), zip(volume.shape[1:], volume.pixdim, strict=True),
                         strict=True))  # anatomical axis -> (voxels, mm)
        extent = {axis: voxels * abs(float(mm)) for axis, (voxels, mm) in along.items()}

        def most(axis: int, limit: int) -> int:
            return min(limit, RESAMPLED_GROWTH_LIMIT * along[axis][0])

        slice_mm = max(spacing_mm[0], extent[2] / most(2, RESAMPLED_SLICE_LIMIT))
        in_plane = max(1.0, extent[1] / (spacing_mm[1] * most(1, RESAMPLED_SIDE_LIMIT)),
                       extent[0] / (spacing_mm[2] * most(0, RESAMPLED_SIDE_LIMIT)))
        pixdim = (slice_mm, spacing_mm[1] * in_plane, spacing_mm[2] * in_plane)
        # labels=None: the image's own space
        planned = Spacing(pixdim=pixdim, lazy=True)(
            Orientation(axcodes=VOLUME_AXES, labels=None, lazy=True)(volume))
        return SpatialResample(mode="bilinear", dtype=np.float32)(
            volume, dst_affine=planned.peek_pending_affine(),
            spatial_size=planned.peek_pending_shape())

    def load_picture(path: Path) -> torch.Tensor:
        """A display picture's grey levels scaled from DISPLAY_RANGE (8-bit) or the picture's
        own range (more bits) to [0, 1], fitted and standardised."""
        from m3fm.imaging import read_picture, scale_to_unit_

        image, bits = read_picture(path)
        low, high = (image.min().item(), image.max().item()) if bits > 8 else DISPLAY_RANGE
        return fit_slice(scale_to_unit_(image, low, high))

    def load_ct(path: Path) -> torch.Tensor:
        """A slice becomes (1, size, size), a volume (1, depth, size, size), by spatial rank;
        a DICOM slice or volume is windowed to `window` (HU)."""
        from m3fm.imaging import read_image, scale_to_unit_

        if is_display_image(path.name) and not path.is_dir():
            return load_picture(path)
        image = read_image(path)
        if image.ndim == 4:
            resampled = orient_and_resample(image)
            del image  # only the resampled volume is needed from here on
            return volume_pipeline()(resampled)
        if image.ndim == 3:
            level, width = window
            return fit_slice(scale_to_unit_(image, level - width / 2, level + width / 2))
        raise ValueError(
            f"expected a 2D slice or a 3D volume, got an array of shape {tuple(image.shape[1:])}"
        )

    return ModalitySpec(
        name=name,
        description=description,
        file_types=DISPLAY_IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES,
        accepts_directories=True,
        slice_shape=(1, image_size, image_size),
        volume_shape=(1, depth, image_size, image_size),
        load=load_ct,
        build_encoder=build_ct_encoder,
        labels=LABELS,
        sample_files=SAMPLE_FILES,
        dicom_modalities=("CT",),
        augment=augment_ct,
    )


def augment_ct(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A training view of a loaded slice (1, H, W) or volume (1, D, H, W): window jitter, then
    a random crop.

    `load` has already windowed the HU values into [0, 1] (0 and 1 the window's edges, values
    outside clipped) and standardised that with :data:`m3fm.imaging.BACKBONE_MEAN` and
    :data:`~m3fm.imaging.BACKBONE_STD`, so the raw HU are gone.  The jitter is the intensity
    change that moving the window would make: the level shifts by up to WINDOW_LEVEL_JITTER of
    the width and the width scales by a factor in WINDOW_WIDTH_JITTER, i.e. windowed values
    ``u`` become ``0.5 + (u - 0.5 - shift) / factor`` about the window's centre, clipped back to
    [0, 1], then standardised as `load` does; the result stays in `load`'s output range.  HU
    that the original window clipped stay at its edges (a wider window cannot bring them back).
    The same draw applies to a whole volume; then :func:`m3fm.imaging.random_crop` crops every
    slice alike.  Every draw comes from `generator`; returns a new tensor of the same shape and
    dtype.
    """
    import torch

    from m3fm.imaging import BACKBONE_MEAN, BACKBONE_STD, random_crop

    shift_draw, width_draw = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    shift = WINDOW_LEVEL_JITTER * (2 * shift_draw - 1)
    low, high = WINDOW_WIDTH_JITTER
    factor = low + (high - low) * width_draw
    # The same map on standardised values: the window's centre and edges in load's output.
    bottom, top = (0.0 - BACKBONE_MEAN) / BACKBONE_STD, (1.0 - BACKBONE_MEAN) / BACKBONE_STD
    centre = (bottom + top) / 2
    jittered = ((image - centre - shift * (top - bottom)) / factor + centre).clamp(bottom, top)
    return random_crop(jittered, generator)


def build_ct_encoder(options: EncoderOptions) -> nn.Module:
    """One grey-input timm backbone for slices (B, 1, H, W) and volumes (B, 1, D, H, W)."""
    from m3fm.imaging import SlicePooledEncoder, timm_encoder

    return SlicePooledEncoder(timm_encoder(options, default_backbone=DEFAULT_BACKBONE, in_chans=1))


@hookimpl
def m3fm_modalities() -> list[ModalitySpec]:
    """The CT modality with the lung window."""
    return [ct_spec()]


@hookimpl
def m3fm_labels() -> list[LabelSpec]:
    """The CT labels, with English prompts."""
    return [COVID19]
