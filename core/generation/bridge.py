"""Crossing the modality gap: image embeddings sit apart from the text embeddings the
generator was trained on, so they are moved towards the text side before decoding.

``memory`` (after the paper's and DeCap's projection onto a text memory) replaces an image
embedding by the softmax-weighted mean of the training-text embeddings of the target
language, which lands it among points the generator has seen; ``noise`` decodes it as it is
and relies on the noise the generator was trained with.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from m3fm.generation.config import DecodeConfig
from m3fm.registry import InputError

BANK_FILE = "memory_bank.safetensors"


class MemoryBank:
    """Text embeddings of training reports, per language, stored with the checkpoint."""

    def __init__(self, embeddings: dict[str, torch.Tensor]) -> None:
        self.embeddings = {lang: F.normalize(vectors.float(), dim=-1)
                           for lang, vectors in embeddings.items()}

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.embeddings)

    def project(self, queries: torch.Tensor, language: str, temperature: float) -> torch.Tensor:
        """Softmax(cosine / temperature)-weighted means of the bank, L2-normalised."""
        bank = self.embeddings[language].to(queries.device)
        weights = torch.softmax(queries @ bank.T / temperature, dim=-1)
        return F.normalize(weights @ bank, dim=-1)

    def save(self, directory: Path) -> None:
        # Half precision: the bank only steers a softmax, and it halves the file.
        tensors = {lang: vectors.half().contiguous() for lang, vectors in self.embeddings.items()}
        save_file(tensors, str(directory / BANK_FILE))

    @classmethod
    def load(cls, directory: Path) -> MemoryBank:
        path = directory / BANK_FILE
        if not path.is_file():
            raise InputError(f"{directory}: not an m3fm report model (no {BANK_FILE})")
        return cls(load_file(str(path)))


def bridge(
    embeddings: torch.Tensor, language: str, decode: DecodeConfig, bank: MemoryBank
) -> torch.Tensor:
    """The points the generator decodes for image `embeddings`, by `decode.bridge`."""
    if decode.bridge == "noise":
        return embeddings
    return bank.project(embeddings, language, decode.memory_temperature)
