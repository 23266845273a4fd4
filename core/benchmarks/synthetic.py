"""A synthetic image–report corpus of any size, for benchmarks and tests that need many pairs.

:func:`write_corpus` writes `count` small grey PNGs (``SIDE`` px square: a chest-like pair
of dark fields on a bright background, a bright blob for each finding present, and noise, so
that no two images are alike) with templated English reports, into a folder holding a
``manifest.jsonl`` that ``m3fm train`` reads as-is.  Reports combine a few finding sentences, so
they repeat as real reports do.  Everything is a function of the seed.

The images are small on purpose: at 128 px a PNG is about 13 kB and takes a few milliseconds
to draw and encode, so 20,000 pairs take about a minute and 260 MB; the modality plugins
resize them to their own input size anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 128
"""Side of every image, in pixels."""

FINDINGS = {
    "effusion": ("Small left pleural effusion.", "No pleural effusion."),
    "consolidation": ("Patchy consolidation in the right lower lobe.", "No focal consolidation."),
    "cardiomegaly": ("The heart is enlarged.", "The heart size is normal."),
    "pneumothorax": ("Small apical pneumothorax on the right.", "No pneumothorax."),
    "nodule": ("A 1 cm nodule in the left upper lobe.", "No suspicious nodule."),
}
"""Label: (sentence when present, sentence when absent); every report states each finding."""

OPENINGS = ("Chest radiograph.", "Frontal view of the chest.", "Single view of the chest.")

FINDING_RATE = 0.2
"""Chance of each finding; with five of them about a third of the images are normal."""


def write_corpus(folder: Path, count: int, *, modalities: Sequence[str] = ("cxr",),
                 val_share: float = 0.05, side: int = SIDE, seed: int = 0) -> Path:
    """Write `count` image–report pairs into `folder` (created) and return its manifest.

    Image ``i`` has modality ``modalities[i % len(modalities)]``; the last `val_share` of the
    pairs form the ``val`` split, the others ``train``.  Images are ``images/NNNNNN.png``.
    """
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = _grid(side)
    val_from = count - round(count * val_share)
    manifest = folder / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as out:
        for index in range(count):
            labels = {label: int(rng.random() < FINDING_RATE) for label in FINDINGS}
            name = f"images/{index:06d}.png"
            Image.fromarray(_pixels(rng, grid, sum(labels.values()))).save(
                folder / name, compress_level=1)
            row = {
                "id": f"synthetic-{index:06d}",
                "language": "en",
                "report": _report(rng, labels),
                "image": name,
                "modality": modalities[index % len(modalities)],
                "split": "val" if index >= val_from else "train",
                "patient": f"patient-{index // 2:06d}",
                "labels": labels,
            }
            out.write(json.dumps(row) + "\n")
    return manifest


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1], shared by every image of a corpus."""
    axis = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    return axis[None, :], axis[:, None]


def _pixels(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray],
            blobs: int) -> np.ndarray:
    """One uint8 image: two dark 'lung' ellipses at a jittered place, `blobs` bright spots,
    and noise."""
    x, y = grid
    image = np.full(np.broadcast_shapes(x.shape, y.shape), 0.8, dtype=np.float32)
    dx, dy, width = rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), rng.uniform(0.25, 0.35)
    for centre in (-0.42, 0.42):
        inside = ((x - centre - dx) / width) ** 2 + ((y - dy) / 0.6) ** 2 < 1
        image[inside] = 0.25
    for _ in range(blobs):
        cx, cy, radius = rng.uniform(-0.7, 0.7), rng.uniform(-0.5, 0.5), rng.uniform(0.05, 0.15)
        image += 0.4 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    image += rng.normal(0.0, 0.05, image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _report(rng: np.random.Generator, labels: dict[str, int]) -> str:
    """An opening, then one sentence per finding: positive findings first, as radiologists
    write them, then the pertinent negatives."""
    sentences = [OPENINGS[rng.integers(len(OPENINGS))]]
    sentences += [FINDINGS[label][0] for label, present in labels.items() if present]
    sentences += [FINDINGS[label][1] for label, present in labels.items() if not present]
    return " ".join(sentences)
