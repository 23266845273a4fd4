"""Zero-shot diagnosis: an embedding against each label's positive and negative prompts.

A label's prompts come from the language plugin (several sentences, ensembled by averaging
their normalised embeddings, as CLIP does).  The probability that a label is present is the
softmax over (positive, negative) similarity at the alignment model's learnt temperature, so
the same scale that trained the space calibrates the scores.  Prompts in any aligned language
work: Chinese prompts reach the image through the English pivot.

The score can come from the image embedding, from the embedding of a report the model wrote
for it (report-based diagnosis), or from the mean of both (combined), as in the M3FM paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch.nn.functional import normalize

from m3fm.embedding import Embedder
from m3fm.registry import UnknownNameError, UsageError, get_registry

ArrayT = TypeVar("ArrayT")


def resolve_labels(modality: str, labels: Sequence[str] | None) -> tuple[str, ...]:
    """`labels`, checked against those the modality plugin declares; all of them when None."""
    declared = get_registry().modality(modality).labels
    if labels is None:
        if not declared:
            raise UsageError(f"modality {modality!r} declares no diagnosis labels")
        return declared
    for label in labels:
        if label not in declared:
            raise UnknownNameError(f"label for modality {modality!r}:", label, list(declared),
                                   listed_as="it declares")
    return tuple(labels)


class PromptClassifier:
    """The prompts of some labels in one language, embedded once, to score many embeddings."""

    def __init__(self, embedder: Embedder, labels: Sequence[str], lang: str) -> None:
        self.embedder = embedder
        self.labels = tuple(labels)
        self.lang = lang
        language = get_registry().language(lang)
        pairs = []
        for label in self.labels:
            positive, negative = language.prompts(label)
            pairs.append(torch.stack([self._ensemble(positive), self._ensemble(negative)]))
        self.prompts = torch.stack(pairs)  # (labels, 2, dim): [present, absent]
        self.logit_scale = embedder.logit_scale

    def _ensemble(self, sentences: Sequence[str]) -> torch.Tensor:
        return normalize(self.embedder.embed_texts(list(sentences), self.lang).mean(0), dim=0)

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """P(label present) (N, labels) for L2-normalised embeddings (N, dim)."""
        logits = self.logit_scale * torch.einsum("nd,lcd->nlc", embeddings, self.prompts)
        return logits.softmax(dim=-1)[..., 0]

    def report_probabilities(self, reports: Sequence[str]) -> torch.Tensor:
        """P(label present) (N, labels) read from reports in this classifier's language."""
        return self.probabilities(self.embedder.embed_texts(list(reports), self.lang))


def combine(image: ArrayT, report: ArrayT) -> ArrayT:
    """The combined score: mean of the image-based and report-based probabilities (tensors or
    arrays)."""
    return (image + report) / 2


def as_mapping(labels: Sequence[str], row: torch.Tensor) -> dict[str, float]:
    """One input's probabilities as ``{label: probability}``, rounded for output."""
    return {label: round(float(p), 4) for label, p in zip(labels, row, strict=True)}
