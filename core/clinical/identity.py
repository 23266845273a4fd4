"""Which model wrote a clinical output, precisely enough to tell two checkpoints apart.

A reader of an SR or FHIR report must be able to find the exact weights behind it: the name
and m3fm's version alone do not change when a model is retrained, so the identity carries a
fingerprint of the weight files themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from m3fm.checkpoint import read_metadata
from m3fm.registry import InputError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelIdentity:
    """The model behind an output."""

    name: str
    """metadata.json's ``task.recipe.name`` if present, else the checkpoint folder's name."""
    version: str
    """m3fm's version."""
    fingerprint: str
    """sha256 hex digest over the checkpoint's ``*.safetensors`` files, names and bytes."""


def model_identity(model_dir: Path) -> ModelIdentity:
    """The identity of the checkpoint in `model_dir`."""
    model_dir = Path(model_dir)
    return ModelIdentity(_name(model_dir), version("m3fm"), _fingerprint(model_dir))


def _name(model_dir: Path) -> str:
    if (model_dir / "metadata.json").is_file():
        task = read_metadata(model_dir).get("task")
        recipe = task.get("recipe") if isinstance(task, dict) else None
        name = recipe.get("name") if isinstance(recipe, dict) else None
        if isinstance(name, str) and name:
            return name
    return model_dir.resolve().name


def _fingerprint(model_dir: Path) -> str:
    """Each file's relative path and size go in before its bytes, so that moving bytes from one
    file to another, or renaming a file, changes the digest."""
    files = sorted((path.relative_to(model_dir).as_posix(), path)
                   for path in model_dir.rglob("*.safetensors") if path.is_file())
    if not files:
        raise InputError(f"{model_dir}: no *.safetensors weight files to identify the model by")
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(f"{relative}\0{path.stat().st_size}\0".encode())
        try:
            with open(path, "rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
        except OSError as error:
            raise InputError(f"{path}: cannot read it ({error.strerror})") from None
    return digest.hexdigest()
