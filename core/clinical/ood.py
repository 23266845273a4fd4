"""The out-of-distribution flag: does an input look like none of the model's training images?

A model answers for any picture it is given, a photograph or a chest X-ray read as CT too, and
the report it writes then reads as fluently as a real one.  So an alignment checkpoint may
carry, per modality, the mean and a shrinkage (Ledoit–Wolf) covariance of its training images'
features; an input's score is its Mahalanobis distance from them, and it is flagged when the
score is above a threshold chosen on validation images (:data:`RULE`).

The features are the image tower's pooled output before the projection into the shared space
(:meth:`~m3fm.embedding.Embedder.image_features`): the space keeps what reports say about an
image and drops how it looks, so in it a photograph or an MR slice read as CT scores like a
real CT slice; the tower's features set them apart.  Assessing inputs::

    model = m3fm.load(path)
    if model.ood is not None:
        rows = model.ood.assess("ct", model.image_features(images, modality="ct"))

Stored in the alignment folder (``DIR/align/`` of a report model)::

    ood.safetensors   <modality>.mean (F,), <modality>.precision (F(F+1)/2,): the upper
                      triangle of the symmetric precision matrix, row by row, float32
    ood.json          per modality its dim, threshold and image counts; the rule; the data;
                      the SHA-256 of ood.safetensors, so that the two files are one pair
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from m3fm.checkpoint import DAMAGED, CheckpointError, atomic_write_text, read_json_object
from m3fm.outputs import json_text
from m3fm.progress import track
from m3fm.registry import InputError, get_registry

if TYPE_CHECKING:
    from m3fm.alignment.model import MultiMedCLIP
    from m3fm.embedding import Embedder
    from m3fm.registry import Record

log = logging.getLogger(__name__)

TENSORS_FILE = "ood.safetensors"
DESCRIPTION_FILE = "ood.json"
FORMAT_VERSION = 1
FEATURES = "image tower pooled features, before the projection into the shared space"
MAX_FLAGGED = 0.05
RULE = ("score = Mahalanobis distance of the image features from the training images' mean "
        "under their Ledoit-Wolf covariance; flagged when score > threshold; with s(1) <= ... "
        "<= s(n) the n validation images' scores and k = ceil((1 - max_flagged) * n), "
        "threshold = (s(k) + s(k+1)) / 2 (s(n) when k = n), so that at most max_flagged of "
        "them are flagged, and none of them lies on the threshold, where rounding could flip it")
CHUNK = 64
"""Images embedded at a time while fitting: few enough to hold, enough for a batch."""


@dataclass(frozen=True)
class Description:
    """One modality's training features in brief, and where its flag starts."""

    mean: torch.Tensor
    precision: torch.Tensor
    threshold: float
    counts: dict[str, int]
    """``train`` and ``val`` images used; ``val_flagged``: how many val images are above."""

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.double() - self.mean.double()
        squared = ((centred @ self.precision.double()) * centred).sum(dim=1)
        return squared.clamp(min=0).sqrt()


class OODDetector:
    """Flags image features far from a model's training images, per modality."""

    def __init__(self, descriptions: dict[str, Description], data: dict[str, Any]) -> None:
        self.descriptions = descriptions
        self.data = data
        """Where the images came from: data folder, sources, splits."""

    def assess(self, modality: str, features: torch.Tensor) -> list[dict]:
        """Per row of `features` (N, F) ``{"ood": bool, "ood_score": float,
        "ood_threshold": float}``, scores rounded to 3 decimals.

        A modality without a description gets ``[]``, no statement either way: the model saw
        no validation images of it to set a threshold on.
        """
        description = self.descriptions.get(modality)
        if description is None:
            return []
        dim = description.mean.shape[0]
        if features.ndim != 2 or features.shape[1] != dim:
            raise InputError(f"{modality} features of shape {tuple(features.shape)} do not fit "
                             f"the out-of-distribution description (N, {dim}); pass "
                             "Embedder.image_features, not embeddings")
        threshold = round(description.threshold, 3)
        return [{"ood": score > description.threshold, "ood_score": round(score, 3),
                 "ood_threshold": threshold}
                for score in description.scores(features).tolist()]

    def save(self, directory: Path) -> None:
        """Write both files into checkpoint `directory`, each replaced atomically."""
        tensors = {}
        for modality, description in self.descriptions.items():
            dim = description.mean.shape[0]
            upper = torch.triu_indices(dim, dim)
            tensors[f"{modality}.mean"] = description.mean.float().contiguous()
            tensors[f"{modality}.precision"] = description.precision.float()[upper[0], upper[1]]
        blob = save_tensors(tensors, metadata={"format": "pt"})
        partial = directory / f".{TENSORS_FILE}.partial"
        with open(partial, "wb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(directory / TENSORS_FILE)  # ood.json, written next, names its hash
        summary = {
            "version": FORMAT_VERSION,
            "features": FEATURES,
            "rule": RULE,
            "modalities": {
                modality: {"dim": d.mean.shape[0], "threshold": d.threshold, **d.counts}
                for modality, d in self.descriptions.items()
            },
            "data": self.data,
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        }
        atomic_write_text(directory / DESCRIPTION_FILE, json_text(summary, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> OODDetector | None:
        """The detector stored in checkpoint `directory`; None when it has none (checkpoints
        from before it existed); a CheckpointError naming what is wrong when it is damaged."""
        summary_file, tensors_file = directory / DESCRIPTION_FILE, directory / TENSORS_FILE
        if not summary_file.exists() and not tensors_file.exists():
            return None
        for path in (summary_file, tensors_file):
            if not path.is_file():
                raise CheckpointError(f"{path}: missing, but its pair is there; {DAMAGED}")
        summary = read_json_object(summary_file)
        try:
            blob = tensors_file.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{tensors_file}: cannot read it ({exc.strerror})") from None
        if hashlib.sha256(blob).hexdigest() != summary.get("tensors_sha256"):
            raise CheckpointError(f"{tensors_file}: not the file {DESCRIPTION_FILE} was written "
                                  f"with (its SHA-256 differs); {DAMAGED}")
        try:
            tensors = load_tensors(blob)
            return cls(_descriptions(summary, tensors), dict(summary.get("data", {})))
        except (SafetensorError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{directory}: out-of-distribution description does not "
                                  f"fit ({_one_line(exc)}); {DAMAGED}") from None


def _descriptions(summary: dict, tensors: dict[str, torch.Tensor]) -> dict[str, Description]:
    if summary.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {summary.get('version')!r}, not {FORMAT_VERSION}")
    descriptions = {}
    for modality, entry in summary["modalities"].items():
        dim = int(entry["dim"])
        mean, packed = tensors[f"{modality}.mean"], tensors[f"{modality}.precision"]
        if mean.shape != (dim,) or packed.shape != (dim * (dim + 1) // 2,):
            raise ValueError(f"{modality} tensors of shapes {tuple(mean.shape)} and "
                             f"{tuple(packed.shape)} for dim {dim}")
        threshold = float(entry["threshold"])
        if not (math.isfinite(threshold) and packed.isfinite().all() and mean.isfinite().all()):
            raise ValueError(f"{modality} values are not finite")
        precision = torch.zeros(dim, dim)
        upper = torch.triu_indices(dim, dim)
        # Both halves by assignment: adding the transpose would turn a -0.0 into 0.0, and a
        # report model that re-saves its alignment model's description would change its bytes.
        precision[upper[0], upper[1]] = packed.float()
        precision[upper[1], upper[0]] = packed.float()
        counts = {key: int(entry[key]) for key in ("train", "val", "val_flagged")}
        descriptions[modality] = Description(mean.float(), precision, threshold, counts)
    return descriptions


def _one_line(exc: Exception) -> str:
    return f"no {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())


def load_for(model: MultiMedCLIP, directory: Path) -> OODDetector | None:
    """The detector in alignment checkpoint `directory`, refused unless it describes
    modalities of `model` in the dims of its image features."""
    detector = OODDetector.load(directory)
    if detector is None:
        return None
    dims = {name: projection.in_features for name, projection in model.image_projections.items()}
    for modality, description in detector.descriptions.items():
        if dims.get(modality) != description.mean.shape[0]:
            raise CheckpointError(
                f"{directory / DESCRIPTION_FILE}: describes {modality} features of dim "
                f"{description.mean.shape[0]}, which this model does not make; rerun "
                "`m3fm calibrate-ood` for it"
            )
    return detector


def describe(train: torch.Tensor, val: torch.Tensor, max_flagged: float = MAX_FLAGGED
             ) -> Description:
    """A modality's description from its training features, thresholded on `val` by
    :data:`RULE`."""
    from sklearn.covariance import LedoitWolf

    if len(train) < 2 or len(val) < 1:
        raise InputError(f"an out-of-distribution description needs at least 2 training and "
                         f"1 validation images; got {len(train)} and {len(val)}")
    if not 0 <= max_flagged < 1:
        raise InputError(f"max_flagged must be in [0, 1), got {max_flagged}")
    fitted = LedoitWolf().fit(train.double().numpy())
    mean = torch.from_numpy(fitted.location_).float()
    # Symmetrised and rounded as it will be stored, so the threshold fits the stored values.
    precision = torch.from_numpy((fitted.precision_ + fitted.precision_.T) / 2).float()
    scores = Description(mean, precision, math.inf, {}).scores(val).sort().values.tolist()
    # rounded first: (1 - 0.172) * 250 is 207.00000000000003, whose ceiling is 208
    kept = math.ceil(round((1 - max_flagged) * len(scores), 9))
    threshold = (scores[kept - 1] + scores[min(kept, len(scores) - 1)]) / 2
    counts = {"train": len(train), "val": len(val),
              "val_flagged": sum(score > threshold for score in scores)}
    return Description(mean, precision, threshold, counts)


def readable_features(embedder: Embedder, images: Sequence[Path], modality: str
                      ) -> torch.Tensor:
    """Image features of the `images` that can be read; those that cannot are left out, as
    training leaves them out, with one warning that counts them (training has named them)."""
    from m3fm.data.cache import PreprocessCache
    from m3fm.data.streaming import preprocessed

    spec = get_registry().modality(modality)
    loaded = preprocessed(spec, images, cache=PreprocessCache.resolve())
    rows, chunk, unreadable = [], [], 0
    for _, image in track(loaded, f"describing {modality} images", total=len(images)):
        if isinstance(image, Exception):
            unreadable += 1
            continue
        chunk.append(image)
        if len(chunk) == CHUNK:
            rows.append(embedder.image_features(chunk, modality=modality))
            chunk = []
    if chunk:
        rows.append(embedder.image_features(chunk, modality=modality))
    if unreadable:
        log.warning("the out-of-distribution description of %s leaves out %d image(s) that "
                    "cannot be read (`m3fm preprocess` names them)", modality, unreadable)
    dim = embedder.model.image_projections[modality].in_features
    return torch.cat(rows) if rows else torch.empty(0, dim)


def images_by_modality(records: Iterable[Record], split: str) -> dict[str, list[Path]]:
    """The distinct image files of `split`, per modality, in a stable order."""
    found: dict[str, set[Path]] = {}
    for record in records:
        if record.split == split and record.image is not None and record.modality:
            found.setdefault(record.modality, set()).add(Path(record.image))
    return {modality: sorted(paths) for modality, paths in found.items()}


def fit_ood(embedder: Embedder, train_images: dict[str, list[Path]],
            val_images: dict[str, list[Path]], max_flagged: float = MAX_FLAGGED,
            data: dict[str, Any] | None = None) -> OODDetector:
    """Describe each modality of the model that has training and validation images; `data`
    says where they came from (kept in ``ood.json``).  An InputError when none has both."""
    descriptions, skipped = {}, []
    for modality in embedder.modalities:
        train, val = train_images.get(modality, []), val_images.get(modality, [])
        if len(train) < 2 or not val:
            skipped.append(f"{modality}: {len(train)} training, {len(val)} validation images")
            continue
        descriptions[modality] = describe(readable_features(embedder, train, modality),
                                          readable_features(embedder, val, modality),
                                          max_flagged)
    if not descriptions:
        raise InputError("no modality to describe: each needs at least 2 training and 1 "
                         f"validation images ({'; '.join(skipped)})")
    for reason in skipped:
        log.warning("no out-of-distribution description of %s", reason)
    return OODDetector(descriptions, data or {})


def calibrate(align_dir: Path, records: Sequence[Record], train_split: str, val_split: str,
              data: dict[str, Any], max_flagged: float = MAX_FLAGGED) -> OODDetector:
    """Fit the description of alignment checkpoint `align_dir` on `records` and save it
    there; `data` (folder, sources) goes into ``ood.json`` with the splits."""
    from m3fm.alignment.model import MultiMedCLIP
    from m3fm.embedding import Embedder

    embedder = Embedder(MultiMedCLIP.from_pretrained(align_dir))
    detector = fit_ood(embedder, images_by_modality(records, train_split),
                       images_by_modality(records, val_split), max_flagged,
                       data | {"train_split": train_split, "val_split": val_split})
    detector.save(align_dir)
    return detector
