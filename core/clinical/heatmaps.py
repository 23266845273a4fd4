"""Saliency maps as PNG overlays a reader opens beside the report.

Each target's map is drawn in matplotlib's ``jet`` colormap over the input as the model saw it
(the preprocessed image, first channel, min-max scaled like the viewer's preview), with opacity
growing with saliency so unremarkable regions stay plain grey.  A volume gets one PNG per target
with its slices tiled left to right, top to bottom in a near-square grid, so a target is one
file whatever the input.  Pictures are at the preprocessed input's resolution, not the file's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from m3fm.clinical import output_path
from m3fm.registry import UsageError

COLORMAP = "jet"
MAX_OPACITY = 0.6
"""Opacity of the colour where the map is 1; it falls linearly to 0 where the map is 0."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def display_image(image: torch.Tensor) -> np.ndarray:
    """The preprocessed input (C, H, W) or (C, D, H, W) as uint8 grey (H, W) or (D, H, W): its
    first channel min-max scaled to 0-255, each slice on its own."""
    planes = image[0].float().reshape(-1, *image.shape[-2:])
    low = planes.amin(dim=(1, 2), keepdim=True)
    high = planes.amax(dim=(1, 2), keepdim=True)
    scaled = ((planes - low) / (high - low).clamp_min(1e-12) * 255).round()
    return scaled.reshape(image.shape[1:]).numpy().astype(np.uint8)


def overlays(image: torch.Tensor, maps: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per target, its file-safe name and the overlay picture (H, W, 3) uint8, a volume's
    slices tiled into one picture."""
    import matplotlib

    colormap = matplotlib.colormaps[COLORMAP]
    names = {target: _UNSAFE.sub("_", target).strip("_") or "target" for target in maps}
    if len(set(names.values())) < len(names):
        raise UsageError(f"saliency targets {', '.join(maps)} share a file name")
    grey = display_image(image).astype(np.float32)[..., None]
    pictures = {}
    for target, saliency in maps.items():
        values = saliency.float().clamp(0, 1).numpy()
        if values.shape != grey.shape[:-1]:
            raise UsageError(f"the {target!r} map has shape {values.shape}, the image "
                             f"{grey.shape[:-1]}")
        opacity = MAX_OPACITY * values[..., None]
        colour = colormap(values)[..., :3] * 255
        overlay = ((1 - opacity) * grey + opacity * colour).round().astype(np.uint8)
        pictures[names[target]] = _tiled(overlay) if overlay.ndim == 4 else overlay
    return pictures


def write_heatmaps(image: torch.Tensor, maps: Mapping[str, torch.Tensor], source: Path,
                   out_dir: Path) -> list[Path]:
    """One PNG overlay per target, ``output_path(out_dir, source, ".<target>.png")``, each
    written to a partial file first and renamed, so a reader never sees half a picture."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, picture in overlays(image, maps).items():
        path = output_path(out_dir, source, f".{name}.png")
        _write_png(picture, path)
        written.append(path)
    return written


def _tiled(slices: np.ndarray) -> np.ndarray:
    """Slices (D, H, W, 3) in a grid of ceil(√D) columns, blank where the last row runs out."""
    depth, height, width, channels = slices.shape
    columns = math.ceil(math.sqrt(depth))
    rows = math.ceil(depth / columns)
    grid = np.zeros((rows * columns, height, width, channels), dtype=slices.dtype)
    grid[:depth] = slices
    grid = grid.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * height, columns * width, channels)


def _write_png(pixels: np.ndarray, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        Image.fromarray(pixels).save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
