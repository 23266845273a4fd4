"""Checks the image-reading tests share: back to grey levels, and the one-line InputError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3fm.imaging import BACKBONE_MEAN, BACKBONE_STD, preprocess
from m3fm.registry import InputError, ModalitySpec


def unit_range(image: torch.Tensor) -> torch.Tensor:
    """Undo the backbone standardisation, back to [0, 1] grey levels."""
    return image * BACKBONE_STD + BACKBONE_MEAN


def input_error(spec: ModalitySpec, path: Path) -> str:
    """The one-line InputError that `preprocess` must raise for `path`, starting with it."""
    with pytest.raises(InputError) as caught:
        preprocess(spec, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message
