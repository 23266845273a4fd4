"""Shared image helpers for modality plugins and the engine.

Modality plugins build on these so that every modality reads files, shapes images and builds
encoders the same way; the engine calls :func:`preprocess` to load one input through any
modality and gets back either a tensor it can trust or a one-line :class:`InputError` that names
the file.  The names in ``__all__`` belong to the plugin SDK (see the Plugin SDK reference):
third-party modality plugins use them as the built-in ``cxr`` and ``ct`` plugins do.
:func:`preprocess` stays importable for the engine and applications, outside that promise.

MONAI, timm and torchvision are imported where they are needed, not here: importing MONAI
takes seconds and hundreds of megabytes, which `m3fm run` on a PNG need not pay (pictures are
read by :func:`read_picture` with PIL, and fitted and standardised with torch alone).
"""

from __future__ import annotations

import difflib
import functools
import logging
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import ImageOps
from torch import nn

from m3fm.filetypes import DICOM_SUFFIXES, DISPLAY_IMAGE_SUFFIXES, NIFTI_SUFFIXES
from m3fm.image_headers import (
    Header,
    RefusedInput,
    check_size,
    max_input_mb,
    open_picture,
    read_header,
)
from m3fm.registry import (
    EncoderOptions,
    InputError,
    M3fmError,
    ModalitySpec,
    UsageError,
    get_registry,
)

if TYPE_CHECKING:
    from monai.data import ImageReader, MetaTensor
    from monai.transforms import LoadImage

__all__ = [
    "BACKBONE_MEAN",
    "BACKBONE_STD",
    "CROP_SCALE",
    "FitToSquare",
    "SlicePooledEncoder",
    "random_crop",
    "read_image",
    "read_picture",
    "scale_to_unit_",
    "standardize",
    "timm_encoder",
]

log = logging.getLogger(__name__)

BACKBONE_MEAN = 0.449
"""ImageNet's mean in grey (ITU-R 601 luma of the RGB means 0.485, 0.456, 0.406)."""
BACKBONE_STD = 0.226
"""ImageNet's standard deviation in grey (luma of the RGB deviations 0.229, 0.224, 0.225)."""

CROP_SCALE = (0.8, 1.0)
"""Side of a random training crop (:func:`random_crop`), as a fraction of the image side."""

_CONSTANT_TOLERANCE = 1e-5
"""Spread below which an image counts as constant: resampling a flat image leaves rounding noise."""
_DEEP_PICTURE_BITS = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
"""PIL modes of pictures with more than 8 bits per grey level, read as they are."""
_LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 weights of R, G and B, the ones PIL's convert("L") uses."""
_LIBRARY_LOGGERS = ("pydicom", "nibabel.global")
"""Loggers of the reading libraries; nibabel's prints header fixes straight to stderr."""


_checked: ContextVar[tuple[Path, Header | None] | None] = ContextVar("_checked", default=None)
"""The input :func:`preprocess` has checked, so that :func:`read_image` reads its header once."""


def read_image(path: str | Path) -> MetaTensor:
    """Read a picture, a DICOM file, a NIfTI volume or a DICOM series folder as float32.

    The result is a MetaTensor, channel first with one grey channel; its axes are:

    * a 2D picture (PNG, JPEG, TIFF) or a single DICOM file: ``(1, rows, columns)``, rows
      first as a viewer shows the image (row 0 at the top);
    * a DICOM series folder: ``(1, rows, columns, slices)``, each slice as above, stacked in
      ascending InstanceNumber (0020,0013) order, not file-name order; a file without an
      InstanceNumber is skipped with a warning;
    * a NIfTI file: ``(1, i, j, k)``, the file's voxel axes as stored, not reoriented.

    For DICOM and NIfTI, ``image.affine`` maps voxel indices to world coordinates in MONAI's
    RAS convention (its readers convert DICOM's LPS), so MONAI's Orientation and Spacing
    transforms can reorient and resample a volume; a picture has no geometry (identity affine).
    `path` may be a `str` or a `Path`.

    Colour (pictures and DICOM) is reduced to luminance, EXIF rotation is applied and DICOM
    MONOCHROME1 is inverted, so that in every format a higher value means brighter.  DICOM
    rescale slope and intercept are applied (CT comes out in HU).  Pictures keep their grey
    levels (0..255 for 8-bit ones, the stored values for 16-bit, 32-bit and float ones) and say
    which in ``meta["picture_bits"]`` (8, 16 or 32).

    The header is read first, and a ValueError refuses, before any pixel is decoded, an input
    over the memory budget (:func:`max_input_mb`), a 4D image, a folder holding several DICOM
    series or a multi-page TIFF.  Library warnings are logged as m3fm warnings naming the file.
    """
    from monai.data import MetaTensor

    path = Path(path)
    with _library_messages_logged(path):
        header = _checked_header(path)
        if _is_picture(path):
            grey_levels, bits = _read_picture(path)
            return MetaTensor(grey_levels, meta={"filename_or_obj": str(path),
                                                 "picture_bits": bits,
                                                 "spatial_shape": tuple(grey_levels.shape[1:])})
        reader = _reader_for(path, colour=header is not None and header.colour)
        image = _one_grey_channel(_loader()(str(path), reader=reader))
    if image.ndim == 4:
        _check_geometry(image.affine)
    if _photometric_interpretation(image) == "MONOCHROME1":
        low, high = image.min().item(), image.max().item()
        image.neg_().add_(low + high)  # in place: the input may be large
    return image


def read_picture(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read a picture (PNG, JPEG, TIFF, ...) as its grey levels and their bit depth, without MONAI.

    The same pixels as :func:`read_image` gives for a picture, ``(1, rows, columns)`` float32,
    with the same checks (memory budget, multi-page TIFF) and colour, EXIF and bit-depth
    handling, and its ``meta["picture_bits"]`` (8, 16 or 32) returned beside it.  A plain tensor
    rather than a MetaTensor: a picture has no geometry, and importing MONAI for it would cost
    `m3fm run` seconds at start-up.  A path that is not a picture is a ValueError.
    """
    path = Path(path)
    if not _is_picture(path):
        raise ValueError(f"read_picture reads {', '.join(DISPLAY_IMAGE_SUFFIXES)} files, not "
                         f"{path.name!r}; read_image reads the others")
    with _library_messages_logged(path):
        _checked_header(path)
        return _read_picture(path)


def _is_picture(path: Path) -> bool:
    return path.name.lower().endswith(DISPLAY_IMAGE_SUFFIXES) and not path.is_dir()


def _checked_header(path: Path) -> Header | None:
    """The input's header (read once when :func:`preprocess` has read it), checked against the
    memory budget."""
    checked = _checked.get()
    header = checked[1] if checked and checked[0] == path else read_header(path)
    if header is not None:
        check_size(header, max_input_mb())
    return header


def _check_geometry(affine: torch.Tensor) -> None:
    """Refuse a volume whose voxel-to-patient geometry cannot be resampled or oriented."""
    if not torch.isfinite(affine).all():
        raise RefusedInput("its geometry (voxel sizes, orientation) holds NaN or infinite values")
    if abs(float(torch.linalg.det(affine[:3, :3].double()))) < 1e-12:
        raise RefusedInput("its geometry (voxel sizes, orientation) is degenerate: a voxel size is "
                       "zero or two axes coincide")


def _read_picture(path: Path) -> tuple[torch.Tensor, int]:
    """Decode a picture (its size is already checked) into grey levels and their bit depth.

    8-bit modes (1, L, LA, P, RGB, RGBA, CMYK, ...) become ITU-R 601 luma in 0..255; 16-bit,
    32-bit integer and float modes keep their stored values, which a conversion to 8 bits
    would clip.  Memory: a colour picture is freed once its grey copy exists, and the grey
    levels are copied into the float32 result a strip at a time, because numpy's copy of a
    whole PIL image goes through bytes and takes twice its size.
    """
    with open_picture(path) as picture:
        ImageOps.exif_transpose(picture, in_place=True)  # photos of films
        bits = _DEEP_PICTURE_BITS.get(picture.mode, 8)
        if bits > 8 or picture.mode == "L":
            grey = picture
        else:
            grey = picture.getchannel("L") if picture.mode == "LAB" else picture.convert("L")
            picture.close()
        width, height = grey.size
        grey_levels = np.empty((1, height, width), np.float32)
        step = max(1, 2**22 // width)  # rows of about 4 million pixels
        for top in range(0, height, step):
            grey_levels[0, top : top + step] = grey.crop((0, top, width, min(top + step, height)))
        grey.close()
    return torch.from_numpy(grey_levels), bits


def _one_grey_channel(image: MetaTensor) -> MetaTensor:
    """Reduce a colour DICOM (its R, G, B channels, as MONAI reads them) to luminance."""
    if image.shape[0] == 3:
        red, green, blue = _LUMA
        return image[0:1] * red + image[1:2] * green + image[2:3] * blue
    if image.shape[0] != 1:
        raise RefusedInput(f"holds {image.shape[0]} channels; m3fm reads grey or RGB images")
    return image


@functools.cache
def _loader() -> LoadImage:
    from monai.transforms import LoadImage

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


def _reader_for(path: Path, colour: bool = False) -> ImageReader:
    from monai.data import NibabelReader

    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_SUFFIXES):
        # swap_ij=False keeps DICOM rows as the first axis, like PIL; the full metadata keeps
        # PhotometricInterpretation; fname_regex=None reads only files that are DICOM.  Colour
        # samples come last in pydicom's array, and MONAI would take them for a spatial axis.
        return _float_pydicom_reader()(swap_ij=False, prune_metadata=False, fname_regex=None,
                                       channel_dim=-1 if colour else None, defer_size="64 KB")
    if name.endswith(NIFTI_SUFFIXES):
        return NibabelReader()
    readable = ", ".join(DISPLAY_IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES)
    raise ValueError(f"read_image reads {readable} files and DICOM folders, not {path.name!r}")


@functools.cache
def _float_pydicom_reader() -> type[ImageReader]:
    """MONAI's DICOM reader, holding each file's pixels once, as float32 (a class made on first
    use, so that MONAI is imported only when a DICOM file is read).

    MONAI keeps every file's pixel bytes and pydicom's decoded copy until a whole series is
    stacked, and rescales through two float32 temporaries; this drops the bytes as soon as
    they are decoded and rescales in place (same values), which roughly halves the memory a
    large file or a long series takes on its way in.
    """
    from monai.data import PydicomReader

    class FloatPydicomReader(PydicomReader):
        def _get_array_data(self, img, filename: str) -> np.ndarray:
            decoded = img.pixel_array
            for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if keyword in img:  # deleting it also drops pydicom's cached copy
                    delattr(img, keyword)
            data = decoded.astype(np.float32)
            del decoded
            if "RescaleSlope" in img:
                data *= float(img.RescaleSlope)
            if "RescaleIntercept" in img:
                data += float(img.RescaleIntercept)
            return data

    return FloatPydicomReader


def _photometric_interpretation(image: MetaTensor) -> str | None:
    tag = image.meta.get("00280004")  # DICOM PhotometricInterpretation, as pydicom's JSON
    return tag["Value"][0] if tag and tag.get("Value") else None


class FitToSquare:
    """Resize the in-plane (last two) axes so the longer one is `size`, then pad to a square.

    Keeping the aspect ratio keeps anatomy in proportion.  The resize is torch's anti-aliased
    bilinear one (MONAI's Resize smooths with zero padding, which darkens the border).  The
    padding takes the image's darkest value, its background, so it adds no edge and a blank
    image stays blank for :func:`preprocess` to reject; it is split as MONAI's SpatialPad
    splits it (the odd pixel at the end).  A volume's slice axis is left alone.  A plain
    callable, usable in a MONAI Compose, written with torch alone so that a picture is
    prepared without importing MONAI.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The image resized and padded to (..., size, size), as a plain tensor."""
        image = torch.as_tensor(image).as_subclass(torch.Tensor)
        *leading, height, width = image.shape
        scale = self.size / max(height, width)
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
        planes = image.reshape(1, -1, height, width)  # channels and slices side by side
        planes = nn.functional.interpolate(
            planes, size=target, mode="bilinear", antialias=True, align_corners=False
        )
        rows, columns = self.size - target[0], self.size - target[1]
        planes = nn.functional.pad(
            planes, (columns // 2, columns - columns // 2, rows // 2, rows - rows // 2),
            value=float(planes.min()))
        return planes.reshape(*leading, self.size, self.size)


def scale_to_unit_(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map [low, high] to [0, 1] in place, clipping values outside; returns `image`.

    What MONAI's ScaleIntensityRange(clip=True) computes, without its full-size temporaries: an
    input may take hundreds of megabytes, and scaling should not add more.  A flat range gives
    zeros (NaN stays NaN), which :func:`preprocess` then reports.
    """
    image.sub_(low)
    return image.div_(high - low).clamp_(0.0, 1.0) if high > low else image.mul_(0.0)


def random_crop(image: torch.Tensor, generator: torch.Generator,
                scale: tuple[float, float] = CROP_SCALE) -> torch.Tensor:
    """A random square crop of an image, resized back to its size: a training augmentation.

    `image` is a preprocessed slice (C, H, W) or volume (C, D, H, W); a volume gets the same
    crop on every slice.  The crop's side is drawn uniformly from `scale` (fractions of the
    shorter side) and its position uniformly over the image, all from `generator`, so one
    generator state gives one crop.  Bilinear, with pixel centres aligned; returns a new tensor
    of the same shape and dtype, never changing `image`.
    """
    height, width = image.shape[-2:]
    low, high = scale
    side = (low + (high - low) * torch.rand(1, generator=generator)) * min(height, width)
    x0 = torch.rand(1, generator=generator) * (width - side)
    y0 = torch.rand(1, generator=generator) * (height - side)
    box = torch.cat([torch.zeros(1), x0, y0, x0 + side, y0 + side]).unsqueeze(0)
    from torchvision.ops import roi_align

    planes = image.reshape(1, -1, height, width)  # every channel and slice: one crop
    cropped = roi_align(planes, box.to(image.dtype), output_size=(height, width), aligned=True)
    return cropped.reshape(image.shape)


class _Standardize:
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image - BACKBONE_MEAN) / BACKBONE_STD


def standardize() -> Callable[[torch.Tensor], torch.Tensor]:
    """Scale [0, 1] intensities to the statistics ImageNet-pretrained backbones expect.

    timm adapts a pretrained RGB stem to one channel by summing its filters, so a grey input
    standardised with ImageNet's grey mean and deviation matches what the weights were fit to.
    A callable (usable in a MONAI Compose) computing what MONAI's
    ``NormalizeIntensity(subtrahend=BACKBONE_MEAN, divisor=BACKBONE_STD)`` does, in torch alone.
    """
    return _Standardize()


def preprocess(spec: ModalitySpec, path: str | Path) -> torch.Tensor:
    """Load one input through a modality: the engine's single entry point for image files.

    The header of a picture, DICOM file or series, or NIfTI file is read first, and what the
    file itself rules out is refused before the plugin runs, so that the plugin is not blamed
    for it: more pixels than the memory budget (:func:`max_input_mb`), a 4D image, several DICOM
    series in one folder, a DICOM Modality the spec does not declare, a volume for a 2D-only
    modality.  The plugin's `load` may fail in any way on a bad file; this turns every failure
    into a one-line InputError naming the file (and its real cause, not MONAI's wrapper), and
    checks the tensor the plugin returns, so that a wrong shape (a plugin bug) or an empty image
    is caught here instead of deep inside a model.  Library warnings become m3fm warnings.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):  # stat only: opening a FIFO would wait forever
        raise InputError(f"{path}: is {_special_file_kind(path)}, not a file or folder; "
                         "m3fm reads images only from regular files and folders")
    if not spec.accepts(path):
        raise InputError(_not_accepted_message(spec, path))
    limit_mb = max_input_mb()
    with _library_messages_logged(path):
        try:
            header = read_header(path)
            if header is not None:
                check_size(header, limit_mb)
        except Exception as exc:
            raise _input_error(spec, path, exc) from exc
        if header is not None:
            _check_declared(spec, path, header)
        checked = _checked.set((path, header))
        try:
            image = spec.load(path)
        except Exception as exc:  # any failure of plugin code on a bad file
            raise _input_error(spec, path, exc) from exc
        finally:
            _checked.reset(checked)
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


def _input_error(spec: ModalitySpec, path: Path, exc: Exception) -> InputError:
    """The one-line error for a failure to read `path`, naming its real cause."""
    # MONAI wraps a transform's failure as "applying transform <... object at 0x...>".
    while (isinstance(exc, RuntimeError) and str(exc).startswith("applying transform")
           and isinstance(exc.__cause__, Exception)):
        exc = exc.__cause__
    if isinstance(exc, RefusedInput):
        return InputError(f"{path}: {_one_line(exc)}")
    return InputError(f"{path}: cannot read it as {spec.name} input: {_one_line(exc)}")


def _check_declared(spec: ModalitySpec, path: Path, header: Header) -> None:
    """Refuse what the file declares that the modality does not read: another DICOM modality,
    or a volume for a 2D-only modality, so that the plugin is never blamed for the file."""
    if "" in header.dicom_modalities:
        log.warning("%s: has no DICOM Modality (0008,0060); read as %s input without checking",
                    path, spec.name)
    for code in header.dicom_modalities:
        if code and spec.dicom_modalities and code not in spec.dicom_modalities:
            readers = sorted({
                provided.name for provided in get_registry().all_provided()
                if provided.kind == "modality" and code in provided.spec.dicom_modalities
                and provided.spec.accepts(path)
            })
            hint = (f"read it with modality {' or '.join(map(repr, readers))}" if readers
                    else f"no installed modality plugin declares {code}")
            raise InputError(
                f"{path}: DICOM Modality (0008,0060) is {code!r}, but modality {spec.name!r} "
                f"reads {', '.join(spec.dicom_modalities)}; {hint}"
            )
    if header.rank == 3 and spec.volume_shape is None:
        where = "folder" if path.is_dir() else "file"
        raise InputError(f"{path}: modality {spec.name!r} reads 2D images; this {where} holds "
                         f"{header.described}")


@contextmanager
def _library_messages_logged(path: Path) -> Iterator[None]:
    """Report what the reading libraries warn about `path` as m3fm warnings naming the file.

    Pillow, pydicom, nibabel and MONAI warn through Python's warnings or their own loggers
    (nibabel's prints to stderr); a user should see each message once, as m3fm's, with the
    file it is about.  Deprecation warnings concern code, not the file: they go on as they were.
    """
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers[:] = [collector]
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.propagate = propagate
        messages = list(collector.messages)
        for warning in caught:
            if issubclass(warning.category, DeprecationWarning | PendingDeprecationWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno, source=warning.source)
            else:
                messages.append(str(warning.message))
        for message in dict.fromkeys(messages):
            log.warning("%s: %s", path, _one_line(message))


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
    (safetensors, or torch's .pth/.bin read by its weights-only unpickler, which runs no code) is
    handed to timm's loader as a state dict, so nothing is downloaded; without one, timm fetches
    the weights from the Hugging Face hub.  With `options.for_inference`, the ResNets that
    :mod:`m3fm.lean.resnet` covers are built in plain torch instead (same parameters and
    outputs; importing timm costs seconds).
    """
    name = options.backbone or default_backbone
    if options.for_inference and not options.pretrained:
        from m3fm.lean.resnet import lean_resnet

        lean = lean_resnet(name, in_chans)
        if lean is not None:
            return lean
    import timm

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
        overlay = None
        if weights is not None:
            # Read here, not by timm from a `file` entry: timm 1.0.20, which m3fm accepts,
            # unpickles a .pth file in full (weights_only=False), and a pickle can run any code.
            state_dict = timm.models.load_state_dict(str(weights), weights_only=True)
            overlay = {"state_dict": state_dict}
        model = timm.create_model(
            name,
            pretrained=options.pretrained,
            num_classes=0,
            in_chans=in_chans,
            pretrained_cfg_overlay=overlay,
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
    model.pretrained_cfg.pop("state_dict", None)  # loaded into the model; do not keep it twice
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
        """Features (B, feature_dim) of slices (B, C, H, W) or volumes (B, C, D, H, W)."""
        if images.ndim == 4:
            return self.slice_encoder(images)
        if images.ndim == 5:
            batch, channels, depth, height, width = images.shape
            slices = images.transpose(1, 2).reshape(batch * depth, channels, height, width)
            return self.slice_encoder(slices).reshape(batch, depth, -1).mean(dim=1)
        shape = tuple(images.shape)
        raise ValueError(f"expected slices (B, C, H, W) or volumes (B, C, D, H, W), got {shape}")
