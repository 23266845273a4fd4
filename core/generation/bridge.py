"""Crossing the modality gap: image embeddings sit apart from the text embeddings the
generator was trained on, so they are moved towards the text side before decoding.

``memory`` (after the paper's and DeCap's projection onto a text memory) replaces an image
embedding by the softmax-weighted mean of the training-text embeddings of the target
language, which lands it among points the generator has seen; ``noise`` decodes it as it is
and relies on the noise the generator was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from m3fm.checkpoint import (
    DAMAGED,
    CheckpointError,
    read_safetensors_with_metadata,
    save_tensor_file,
)
from m3fm.generation.config import DecodeConfig
from m3fm.registry import InputError

BANK_FILE = "memory_bank.safetensors"
COMPOSED_KEY, ORDER_KEY = "composed", "order"
"""Bank file metadata (JSON): the keys stored as the concatenation of others, by their list
of parts; and every key in the bank's order, which is the order of its languages."""


class MemoryBank:
    """Text embeddings of training reports, stored with the checkpoint.

    Keys are a language (``"en"``: every training report of it) or ``"modality/language"``
    (``"ct/en"``: the reports that describe that modality's images).  An image is projected
    onto its own modality's reports when the bank has them, so that a CT image is not averaged
    towards a much larger corpus of chest X-ray reports of the same language.
    """

    def __init__(self, embeddings: dict[str, torch.Tensor]) -> None:
        self.embeddings = {key: F.normalize(vectors.float(), dim=-1)
                           for key, vectors in embeddings.items()}

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(key for key in self.embeddings if "/" not in key)

    @property
    def sizes(self) -> dict[str, int]:
        """Reports kept per key, as the model card states them."""
        return {key: len(vectors) for key, vectors in self.embeddings.items()}

    def covers(self, modality: str | None, language: str) -> bool:
        """Whether the bank holds `language` reports of `modality`, i.e. the generator was
        trained to write that modality's reports in that language."""
        return f"{modality}/{language}" in self.embeddings

    def project(self, queries: torch.Tensor, language: str, temperature: float,
                modality: str | None = None) -> torch.Tensor:
        """Softmax(cosine / temperature)-weighted means of the bank, L2-normalised.

        The best similarity is subtracted before dividing, so that a tiny temperature gives
        the nearest report (a one-hot softmax) instead of overflowing to inf - inf = NaN.
        """
        key = f"{modality}/{language}"
        bank = self.embeddings.get(key, self.embeddings[language]).to(queries.device)
        similarities = queries @ bank.T
        similarities = similarities - similarities.amax(dim=-1, keepdim=True)
        weights = torch.softmax(similarities / temperature, dim=-1)
        return F.normalize(weights @ bank, dim=-1)

    def save(self, directory: Path) -> None:
        """Writes the bank in half precision (it only steers a softmax).  A language's bank
        that is exactly its modalities' banks one after the other (``en`` = ``ct/en`` then
        ``cxr/en``) is stored as that list of keys, not a second copy of the same rows."""
        tensors = {key: vectors.half().contiguous() for key, vectors in self.embeddings.items()}
        composed = {}
        for language in self.languages:
            parts = [key for key in tensors if key.endswith(f"/{language}")]
            if parts and torch.equal(tensors[language], torch.cat([tensors[k] for k in parts])):
                composed[language] = parts
        stored = {key: vectors for key, vectors in tensors.items() if key not in composed}
        metadata = {COMPOSED_KEY: json.dumps(composed), ORDER_KEY: json.dumps(list(tensors))}
        save_tensor_file(stored, directory / BANK_FILE, metadata=metadata)

    @classmethod
    def load(cls, directory: Path) -> MemoryBank:
        path = directory / BANK_FILE
        if not path.is_file():
            raise InputError(f"{directory}: not an m3fm report model (no {BANK_FILE})")
        tensors, metadata = read_safetensors_with_metadata(path)
        try:
            for key, parts in json.loads(metadata.get(COMPOSED_KEY, "{}")).items():
                tensors[key] = torch.cat([tensors[part] for part in parts])
            order = json.loads(metadata.get(ORDER_KEY, "[]")) or list(tensors)
            return cls({key: tensors[key] for key in order})
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
            raise CheckpointError(f"{path}: its metadata does not match its tensors "
                                  f"({type(error).__name__}: {error}); {DAMAGED}") from None


def bridge(
    embeddings: torch.Tensor, language: str, decode: DecodeConfig, bank: MemoryBank,
    modality: str | None = None,
) -> torch.Tensor:
    """The points the generator decodes for `modality` image `embeddings`, by `decode.bridge`."""
    if decode.bridge == "noise":
        return embeddings
    return bank.project(embeddings, language, decode.memory_temperature, modality)
