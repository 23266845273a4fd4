"""Cross-modal retrieval: how well images find their reports, per modality and language.

For each modality and language the evaluation set is the split's images that have a report in
that language (linked through the record ``group``, or the record itself).  Image→text asks each
image to rank all reports of the set; text→image the reverse.  A query's rank is 1 + the number
of candidates scored strictly higher than its own, so identical (templated) reports tie in the
query's favour.  Chance recall@k is k / set size.  Image→Chinese retrieval measures the pivot:
the model never saw an image with a Chinese report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from m3fm.registry import Record

if TYPE_CHECKING:
    from m3fm.data.cache import PreprocessCache
    from m3fm.embedding import Embedder

KS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalSet:
    """Images of one modality and their reports in one language, aligned by index."""

    modality: str
    language: str
    images: tuple[Path, ...]
    texts: tuple[str, ...]


def retrieval_sets(
    records: Sequence[Record], *, split: str, modalities: Sequence[str],
    languages: Sequence[str],
) -> list[RetrievalSet]:
    """One set per (modality, language) that has at least two image–report links in `split`."""
    chosen = [r for r in records if r.split == split]
    image_of: dict[str, tuple[Path, str]] = {}
    for record in chosen:
        if record.image is not None and record.modality in modalities:
            image_of.setdefault(record.group or str(record.image), (record.image, record.modality))
    sets = []
    for modality in modalities:
        for language in languages:
            links: dict[Path, str] = {}
            for record in chosen:
                key = record.group or (str(record.image) if record.image else None)
                if record.language != language or key not in image_of or not record.report.strip():
                    continue
                image, image_modality = image_of[key]
                if image_modality == modality:
                    links.setdefault(image, record.report)
            if len(links) >= 2:
                sets.append(RetrievalSet(modality, language, tuple(links), tuple(links.values())))
    return sets


def rank_metrics(similarity: torch.Tensor) -> dict[str, float]:
    """Recall@k, median and mean rank for queries (rows) whose positive is on the diagonal."""
    positive = similarity.diagonal().unsqueeze(1)
    ranks = (similarity > positive).sum(dim=1) + 1
    metrics = {f"R@{k}": (ranks <= k).float().mean().item() for k in KS}
    metrics["median_rank"] = ranks.float().median().item()
    metrics["mean_rank"] = ranks.float().mean().item()
    return metrics


def evaluate_retrieval(
    sets: Sequence[RetrievalSet], embedder: Embedder, *, cache: PreprocessCache | None = None,
    workers: int = 0,
) -> list[dict[str, object]]:
    """One row per set and direction: size, chance R@5, recall@k and ranks.

    Images are read from their files a batch at a time (in `workers` processes), through the
    preprocessing `cache` when given.
    """
    rows = []
    for subset in sets:
        image_embeddings = embedder.embed_images(
            subset.images, modality=subset.modality, workers=workers, cache=cache
        )
        text_embeddings = embedder.embed_texts(subset.texts, lang=subset.language)
        similarity = image_embeddings @ text_embeddings.T
        size = len(subset.images)
        for direction, matrix in (("image→text", similarity), ("text→image", similarity.T)):
            rows.append({
                "modality": subset.modality, "language": subset.language,
                "direction": direction, "n": size, "chance_R@5": min(5, size) / size,
                **rank_metrics(matrix),
            })
    return rows
