"""Shared image helpers for modality plugins and the engine.

Modality plugins build on these so that every modality reads files, shapes images and builds
encoders the same way; the engine calls :func:`preprocess` to load one input through any
modality and gets back either a tensor it can trust or a one-line :class:`InputError` that names
the file.  Everything here is public API: third-party modality plugins use it as the built-in
``cxr`` and ``ct`` plugins do.
"""

from __future__ import annotations

import difflib
import functools
import logging
import stat
import warnings
from pathlib import Path

import numpy as np
import pydicom
import timm
import torch
from monai.data import ImageReader, MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage, NormalizeIntensity, SpatialPad, Transform
from monai.utils import convert_to_tensor
from PIL import Image, ImageOps
from torch import nn

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES, NIFTI_SUFFIXES
from m3fm.registry import EncoderOptions, InputError, M3fmError, ModalitySpec, UsageError

BACKBONE_MEAN = 0.449
"""ImageNet's mean in grey (ITU-R 601 luma of the RGB means 0.485, 0.456, 0.406)."""
BACKBONE_STD = 0.226
"""ImageNet's standard deviation in grey (luma of the RGB deviations 0.229, 0.224, 0.225)."""

_CONSTANT_TOLERANCE = 1e-5
"""Spread below which an image counts as constant: resampling a flat image leaves rounding noise."""
_GREY_PIL_MODES = frozenset({"L", "I", "I;16", "I;16B", "I;16L", "F"})


def read_image(path: Path) -> MetaTensor:
    """Read an image file, a NIfTI volume or a DICOM series folder as a float32 MetaTensor.

    The result is channel first with one grey channel: (1, H, W) for a 2D image, rows first as
    a viewer shows it, or (1, *voxel axes) for a volume, whose affine lets MONAI's Orientation
    and Spacing act on it.  Colour pictures are reduced to luminance, EXIF rotation is applied
    and DICOM MONOCHROME1 is inverted, so that in every format a higher value means brighter.
    DICOM rescale slope and intercept are applied by MONAI's reader (CT comes out in HU).
    """
    if path.is_dir() and not any(f.is_file() and pydicom.misc.is_dicom(f) for f in path.iterdir()):
        raise ValueError("the folder holds no DICOM files")
    image = _loader()(str(path), reader=_reader_for(path))
    if _photometric_interpretation(image) == "MONOCHROME1":
        image = image.max() + image.min() - image
    return image


@functools.cache
def _loader() -> LoadImage:
    # Built once: LoadImage instantiates every MONAI reader, and the one for NVIDIA's GPU DICOM
    # codec warns when that optional codec is missing; m3fm does not use it, so that is hushed.
    # The reader is passed on each call instead, so that its own error (e.g. "image file is
    # truncated") reaches the user rather than MONAI's generic "cannot find a suitable reader".
    codec_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        codec_log.disabled = True
        try:
            return LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)
        finally:
            codec_log.disabled = False


def _reader_for(path: Path) -> ImageReader:
    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_SUFFIXES):
        # swap_ij=False keeps DICOM rows as the first axis, like PIL; the full metadata keeps
        # PhotometricInterpretation; fname_regex=None reads only files that are DICOM.
        return PydicomReader(swap_ij=False, prune_metadata=False, fname_regex=None)
    if name.endswith(NIFTI_SUFFIXES):
        return NibabelReader()
    if name.endswith(DISPLAY_IMAGE_SUFFIXES):
        return PILReader(converter=_upright_grey, reverse_indexing=False)
    readable = ", ".join(DISPLAY_IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES)
    raise ValueError(f"read_image reads {readable} files and DICOM folders, not {path.name!r}")


def _upright_grey(picture: Image.Image) -> Image.Image:
    """Apply EXIF rotation (photos of films), reduce colour to ITU-R 601 luma, keep 16-bit grey."""
    picture = ImageOps.exif_transpose(picture)
    return picture if picture.mode in _GREY_PIL_MODES else picture.convert("L")


def _photometric_interpretation(image: MetaTensor) -> str | None:
    tag = image.meta.get("00280004")  # DICOM PhotometricInterpretation, as pydicom's JSON
    return tag["Value"][0] if tag and tag.get("Value") else None


class FitToSquare(Transform):
    """Resize the in-plane (last two) axes so the longer one is `size`, then pad to a square.

    Keeping the aspect ratio keeps anatomy in proportion.  The resize is torch's anti-aliased
    bilinear one (MONAI's Resize smooths with zero padding, which darkens the border).  The
    padding takes the image's darkest value, its background, so it adds no edge and a blank
    image stays blank for :func:`preprocess` to reject.  A volume's slice axis is left alone.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pad = SpatialPad((size, size), mode="constant")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = convert_to_tensor(image, track_meta=False)
        *leading, height, width = image.shape
        scale = self.size / max(height, width)
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
        planes = image.reshape(1, -1, height, width)  # channels and slices side by side
        planes = nn.functional.interpolate(
            planes, size=target, mode="bilinear", antialias=True, align_corners=False
        )[0]
        planes = self._pad(planes, value=float(planes.min()))
        return convert_to_tensor(planes, track_meta=False).reshape(*leading, self.size, self.size)


def standardize() -> NormalizeIntensity:
    """Scale [0, 1] intensities to the statistics ImageNet-pretrained backbones expect.

    timm adapts a pretrained RGB stem to one channel by summing its filters, so a grey input
    standardised with ImageNet's grey mean and deviation matches what the weights were fit to.
    """
    return NormalizeIntensity(subtrahend=BACKBONE_MEAN, divisor=BACKBONE_STD)


def preprocess(spec: ModalitySpec, path: str | Path) -> torch.Tensor:
    """Load one input through a modality: the engine's single entry point for image files.

    The plugin's `load` may fail in any way on a bad file; this turns every failure into a
    one-line InputError naming the file, and checks the tensor the plugin returns, so that a
    wrong shape (a plugin bug) or an empty image is caught here instead of deep inside a model.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):  # stat only: opening a FIFO would wait forever
        raise InputError(f"{path}: is {_special_file_kind(path)}, not a file or folder; "
                         "m3fm reads images only from regular files and folders")
    if not spec.accepts(path):
        raise InputError(_not_accepted_message(spec, path))
    try:
        image = spec.load(path)
    except Exception as exc:  # any failure of plugin code on a bad file
        raise InputError(f"{path}: cannot read it as {spec.name} input: {_one_line(exc)}") from exc
    expected = [spec.slice_shape, spec.volume_shape] if spec.volume_shape else [spec.slice_shape]
    if (
        not isinstance(image, torch.Tensor)
        or image.dtype != torch.float32
        or tuple(image.shape) not in expected
    ):
        got = (
            f"a {image.dtype} tensor of shape {tuple(image.shape)}"
            if isinstance(image, torch.Tensor)
            else f"a {type(image).__name__}"
        )
        shapes = " or ".join(str(shape) for shape in expected)
        raise InputError(
            f"{path}: modality plugin {spec.name!r} produced {got} instead of a float32 tensor "
            f"of shape {shapes}; this is a bug in the plugin"
        )
    image = image.as_subclass(torch.Tensor)  # drop MONAI metadata: the engine needs pixels only
    if not torch.isfinite(image).all():
        raise InputError(f"{path}: image has NaN or infinite values after preprocessing")
    low, high = image.min().item(), image.max().item()
    if high - low <= _CONSTANT_TOLERANCE * max(1.0, abs(low)):
        raise InputError(
            f"{path}: image is constant (all values = {low:.4g}) after preprocessing; "
            "nothing to encode"
        )
    return image


def _special_file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _not_accepted_message(spec: ModalitySpec, path: Path) -> str:
    if path.is_dir():
        given = "a folder"
    elif path.name.lower().endswith(".gz") and len(path.suffixes) > 1:
        given = f"{''.join(path.suffixes[-2:]).lower()} files"
    else:
        given = f"{path.suffix.lower()} files" if path.suffix else "files without a suffix"
    reads = ", ".join(spec.file_types) + " files"
    if spec.accepts_directories:
        reads += " and folders"
    return f"{path}: modality {spec.name!r} does not read {given}; it reads {reads}"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (or its type when it has none), cut to `limit`."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timm_encoder(options: EncoderOptions, *, default_backbone: str, in_chans: int = 1) -> nn.Module:
    """A timm 2D backbone returning pooled features (B, feature_dim), for modality encoders.

    timm's `create_model` builds any of its named models; `num_classes=0` removes the classifier
    so the model outputs its pooled features, and `in_chans` adapts the stem to grey images
    (summing pretrained RGB filters).  With `options.pretrained`, a local `options.weights` file
    is loaded through timm's own loader (the `file` entry of the pretrained config), so nothing
    is downloaded; without one, timm fetches the weights from the Hugging Face hub.
    """
    name = options.backbone or default_backbone
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UsageError(
            f"unknown timm backbone {name!r}; {hint}list the names with timm.list_models()"
        )
    weights = options.weights if options.pretrained else None
    if weights is not None and not weights.is_file():
        raise InputError(f"{weights}: no such weights file")
    try:
        model = timm.create_model(
            name,
            pretrained=options.pretrained,
            num_classes=0,
            in_chans=in_chans,
            pretrained_cfg_overlay={"file": str(weights)} if weights else None,
        )
    except Exception as exc:
        if weights is not None:
            cause = _one_line(exc)
            raise InputError(f"{weights}: cannot load it as {name} weights: {cause}") from exc
        if options.pretrained:
            raise M3fmError(
                f"could not fetch pretrained {name} weights from the model hub ({_one_line(exc)}); "
                "download them and pass the local file as the encoder's weights"
            ) from exc
        raise
    # Pooled output size: models with a head convolution (MobileNetV3) report it as
    # head_hidden_size, which then differs from num_features.
    model.feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model


class SlicePooledEncoder(nn.Module):
    """Encode 2D slices and 3D volumes with one 2D encoder: a volume is its slices' mean feature.

    Accepts (B, C, H, W) slices and (B, C, D, H, W) volumes; a volume's D slices run through the
    2D encoder as one batch of B*D images and their features are averaged over D.  Why: our CT
    training data (cov-ctr) are 2D slices, so sharing one 2D backbone between slices and volumes
    lets a model trained on slices encode volumes, whereas a MONAI 3D network would have no 3D
    training data here to learn from.
    """

    def __init__(self, slice_encoder: nn.Module) -> None:
        super().__init__()
        self.slice_encoder = slice_encoder
        self.feature_dim: int = slice_encoder.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 4:
            return self.slice_encoder(images)
        if images.ndim == 5:
            batch, channels, depth, height, width = images.shape
            slices = images.transpose(1, 2).reshape(batch * depth, channels, height, width)
            return self.slice_encoder(slices).reshape(batch, depth, -1).mean(dim=1)
        shape = tuple(images.shape)
        raise ValueError(f"expected slices (B, C, H, W) or volumes (B, C, D, H, W), got {shape}")
