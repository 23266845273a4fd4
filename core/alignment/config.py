"""Configuration of a MultiMedCLIP alignment model and of its losses.

Plain pydantic data: saved as a checkpoint's ``config.json`` and validated on load, so a
checkpoint written by an incompatible version is refused with a message instead of loading
into the wrong architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from m3fm.validation import heads_divide_width, supported_version

Positives = Literal["pairs", "same-text", "same-findings"]
"""Which reports of a batch are positives of each other (see `AlignLossConfig.positives`)."""

CONFIG_VERSION = 1
"""Version of the checkpoint config format; bumped when a change breaks old checkpoints."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageTowerConfig(_Config):
    """Image encoders: one per modality, or one shared by all."""

    backbone: str | None = Field(
        None, description="timm backbone name; None uses each modality plugin's default."
    )
    pretrained: bool = Field(
        False, description="Start from pretrained weights (from `weights`, else the model hub)."
    )
    weights: Path | None = Field(
        None, description="Local weights file for the backbone, used when `pretrained` is set."
    )
    shared: bool = Field(
        False,
        description="One backbone for every modality (built by the first modality's plugin) "
        "instead of one per modality. Each modality keeps its own projection head.",
    )
    input_size: int | None = Field(
        None, gt=15,
        description="Resize preprocessed images to this side before the backbone; smaller is "
        "faster on CPU. None keeps the modality's size.",
    )


class TextTowerConfig(_Config):
    """The text encoder shared by every language."""

    pretrained: str | None = Field(
        None,
        description="A transformers encoder (local directory or hub id) and its tokenizer; "
        "None trains a small BERT-style encoder and a vocabulary from scratch.",
    )
    vocab_size: int = Field(8000, gt=100, description="Vocabulary size when training one.")
    hidden_size: int = Field(256, gt=0, description="Width of the from-scratch encoder.")
    num_layers: int = Field(4, gt=0, description="Depth of the from-scratch encoder.")
    num_heads: int = Field(4, gt=0, description="Attention heads of the from-scratch encoder.")
    intermediate_size: int = Field(1024, gt=0, description="Feed-forward width.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout of the from-scratch encoder.")
    max_length: int = Field(192, gt=8, description="Reports are truncated to this many tokens.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextTowerConfig:
        heads_divide_width(self.hidden_size, self.num_heads)
        return self


class AlignModelConfig(_Config):
    """The whole alignment model: which modalities and languages, and the shared space."""

    config_version: int = Field(CONFIG_VERSION, description="Checkpoint format version.")
    modalities: tuple[str, ...] = Field(min_length=1, description="Modality plugin names.")
    languages: tuple[str, ...] = Field(
        min_length=1, description="Language plugin codes; the anchor (English) must be one."
    )
    embed_dim: int = Field(256, gt=0, description="Dimension of the shared embedding space.")
    init_temperature: float = Field(
        0.07, gt=0, lt=1, description="Initial softmax temperature of the contrastive logits."
    )
    image: ImageTowerConfig = Field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = Field(default_factory=TextTowerConfig)

    @field_validator("config_version")
    @classmethod
    def _supported_version(cls, version: int) -> int:
        return supported_version(version, CONFIG_VERSION)


class AlignLossConfig(_Config):
    """The terms of the stage-1 objective."""

    pivot: Literal["contrastive", "distill"] = Field(
        "contrastive",
        description="How a non-English report is pulled to its English parallel: a symmetric "
        "text–text InfoNCE, or distillation (cosine distance to the detached English embedding).",
    )
    pivot_weight: float = Field(1.0, ge=0, description="Weight of the pivot term.")
    image_other_language: bool = Field(
        False,
        description="Also contrast images with non-English reports. Supervised setting only: "
        "off keeps the zero-shot setting honest (no image is ever paired with such a report).",
    )
    positives: Positives = Field(
        "pairs",
        description="Which reports of a batch count as positives of each other in the "
        "contrastive terms, so that templated reports saying the same thing are not pushed "
        "apart as negatives. `pairs`: only a row's own image or translation (one positive per "
        "row, the plain InfoNCE). `same-text`: also every row whose normalised report text is "
        "identical. `same-findings`: also every row whose report states the same non-empty set "
        "of findings (label, present, side, lobe) as read by the language's finding extractor; "
        "a report without findings, or in a language without an extractor, falls back to its "
        "text. For the pivot term both sides take the anchor-language report's meaning.",
    )
    own_pair_weight: float = Field(
        0.0, ge=0, le=1,
        description="With `same-text` or `same-findings`: the share of each row's target that "
        "stays on its own pair, the rest spread evenly over every row of the same meaning "
        "(own pair included). 0 is the uniform multi-positive target; 1 is plain InfoNCE. A "
        "share in between pulls same-findings reports together without collapsing them onto "
        "one point, which a text-only generator would then decode into one report.",
    )
