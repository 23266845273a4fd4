"""Zero-shot diagnosis: an embedding against each label's positive and negative prompts.

A label's prompts come from its plugins (several sentences, ensembled by averaging their
normalised embeddings, as CLIP does): the label's own prompts in the language, else the
language plugin's, else the anchor language's (see ``PluginRegistry.label_prompts``); the
classifier records which language's prompts each label used.  The probability that a label
is present is the softmax over (positive, negative) similarity at the alignment model's learnt
temperature, so the same scale that trained the space calibrates the scores.  Prompts in any
aligned language work: Chinese prompts reach the image through the English pivot.

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
    """`labels`, checked against the modality's labels (those its plugin declares and those
    ``m3fm_labels()`` entries declare for it); all of them when None."""
    declared = get_registry().modality_labels(modality)
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
        registry = get_registry()
        registry.language(lang)
        pairs = []
        self.prompt_languages: dict[str, str] = {}
        """Label → the language of the prompts it was scored with (`lang`, or the anchor
        language when `lang` has no prompts for it)."""
        for label in self.labels:
            positive, negative, used = registry.label_prompts(label, lang)
            self.prompt_languages[label] = used
            pairs.append(torch.stack([self._ensemble(positive, used),
                                      self._ensemble(negative, used)]))
        self.prompts = torch.stack(pairs)  # (labels, 2, dim): [present, absent]
        self.logit_scale = embedder.logit_scale

    def _ensemble(self, sentences: Sequence[str], lang: str) -> torch.Tensor:
        """Sentences embedded as text of `lang` (their own language, not the classifier's)."""
        return normalize(self.embedder.embed_texts(list(sentences), lang).mean(0), dim=0)

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
