"""Refusing a checkpoint folder that could make loading it run code or read files elsewhere.

Checkpoints are passed around like data, so opening one must be as harmless as opening an
image.  Weights are read from safetensors files only, and configs as JSON; what remains is
what transformers does with a folder: it imports Python modules a config names in
``auto_map`` (after asking on stdin, or without asking when told to trust them) and opens the
files a tokenizer config names.  :func:`check_checkpoint_folder` refuses such a folder before
any library reads it.  docs/security.md states the guarantees.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from m3fm.checkpoint import CheckpointError, read_json_object

CUSTOM_CODE_KEYS = ("auto_map", "custom_pipelines")
"""Config keys with which transformers imports Python modules that come with a model."""
TOKENIZER_CONFIG = "tokenizer_config.json"


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that would make m3fm run code from it or read files outside its folder: a
    config that refers to custom code (transformers' ``auto_map``), a link that leads out of
    the folder, or a tokenizer setting that names a file elsewhere.

    Fix: use the checkpoint only if you trust where it came from; get it again from its
    source, or retrain it with ``m3fm train``.  Checkpoints that m3fm writes never hold any of
    these, so one that does was changed by hand or by other software.
    """


def check_checkpoint_folder(folder: Path) -> None:
    """Refuse `folder`, subfolders included, if a link in it leads out of it or a JSON file in
    it is damaged, refers to custom code or names a file elsewhere; call it before a library
    reads the folder."""
    root = folder.resolve()
    for parent, subfolders, files in os.walk(folder):
        for name in sorted(subfolders + files):
            path = Path(parent, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise UnsafeCheckpointError(
                    f"{path}: a link to {path.resolve()}, outside the checkpoint; m3fm reads "
                    "nothing outside a checkpoint's folder (copy the file in if you trust it)"
                )
            if name.endswith(".json") and path.is_file():
                _check_config(path, root)


def _check_config(path: Path, root: Path) -> None:
    config = read_json_object(path)
    key = _custom_code_key(config)
    if key is not None:
        raise UnsafeCheckpointError(
            f"{path}: refers to custom code ({key}); m3fm never runs code from a checkpoint"
        )
    if path.name != TOKENIZER_CONFIG:
        return
    # Older transformers open a `*_file` named here instead of the file in the folder.
    for key, value in config.items():
        if not key.endswith(("_file", "_files")):
            continue
        for file in value if isinstance(value, list) else [value]:
            if isinstance(file, str) and not (path.parent / file).resolve().is_relative_to(root):
                raise UnsafeCheckpointError(
                    f"{path}: {key} names {file!r}, outside the checkpoint; m3fm reads "
                    "nothing outside a checkpoint's folder"
                )


def _custom_code_key(config: dict[str, Any]) -> str | None:
    """The key by which a transformers config asks for code from outside transformers: its
    ``auto_map`` modules, or a kernel from the Hugging Face hub as its attention."""
    for key, value in config.items():
        if key in CUSTOM_CODE_KEYS:
            return key
        choices = value.values() if isinstance(value, dict) else [value]
        if key.endswith("_implementation") and any("/" in str(c) for c in choices):
            return key
    return None
