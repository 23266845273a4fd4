"""Named, versioned training recipes shipped with m3fm, and recipe files of your own.

A recipe is a TOML (or YAML) file validated by :class:`AlignRecipe` (stage ``align``) or
:class:`GenerateRecipe` (stage ``generate``); ``--set key=value``
overrides any field by its dotted path (``train.max_steps=50``, ``model.image.backbone=resnet10t``),
the value read as YAML (numbers, booleans, lists).  Every error names the field and the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from m3fm.alignment.config import AlignLossConfig, AlignModelConfig
from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.registry import ConfigError, UnknownNameError
from m3fm.training import TrainConfig
from m3fm.validation import describe_validation_error

RECIPE_DIR = Path(__file__).parent


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Config):
    """One data set the recipe reads."""

    path: str = Field(".", description="Folder or file, relative to `--data` (or absolute).")
    format: str | None = Field(None, description="Dataset format name; None detects it.")


class LoadingConfig(_Config):
    """How training images are read: in worker processes, through the preprocessing cache."""

    workers: int = Field(
        0, ge=0,
        description="DataLoader worker processes that read and preprocess the images of the "
        "next steps while the current one trains; 0 reads them in the training process.",
    )
    prefetch: int = Field(2, ge=1, description="Steps each worker prepares ahead.")
    cache_dir: str | None = Field(
        None,
        description="Folder of the preprocessing cache shared by runs, ranks and workers; "
        "'off' reads every image from its file each time; None: $M3FM_CACHE, else the "
        "user cache folder (`m3fm data cache` fills it ahead).",
    )


class AlignDataConfig(LoadingConfig):
    """Which data, which splits, how they are batched."""

    sources: tuple[DataSource, ...] = Field(min_length=1, description="Data sets to read.")
    train_split: str = Field("train", description="Split trained on.")
    val_split: str = Field("val", description="Split evaluated on during training.")
    batch_size: int = Field(
        32, gt=1, description="Image–report pairs per step (all processes together)."
    )
    parallel_batch_size: int | None = Field(
        None, gt=1,
        description="Parallel report pairs per step for the pivot term; None = batch_size. "
        "Smaller is faster: each pair costs two text-encoder passes.",
    )
    plugin_sentences: bool = Field(
        False,
        description="Also pivot on the sentence pairs each non-anchor language plugin ships "
        "(`LanguageSpec.parallel_sentences`), beside the data's parallel reports.",
    )
    augment: bool = Field(
        True, description="Augment training images on the fly with the modality's own "
        "`augment` (plugin API 1.6: crops and a small affine for X-rays, window jitter and "
        "crops for CT), else random crops of 2D images; seeded per step, so a resumed run "
        "sees the same images."
    )


class _Recipe(_Config):
    name: str = Field(description="Recipe name.")
    version: int = Field(ge=1, description="Bumped whenever the recipe's results would change.")
    description: str = Field("", description="What the recipe trains and on which data.")


class AlignRecipe(_Recipe):
    """Stage 1: contrastive alignment of images and reports (MultiMedCLIP)."""

    stage: Literal["align"] = Field(description="Training stage this recipe is for.")
    data: AlignDataConfig
    model: AlignModelConfig
    loss: AlignLossConfig = Field(default_factory=AlignLossConfig)
    train: TrainConfig


class AlignmentSource(_Config):
    """The alignment model a generator is trained on: an existing checkpoint, or a recipe."""

    recipe: str | None = Field(
        None,
        description="Alignment recipe trained first into `OUT/align` with the same `--data` "
        "(reused when `OUT/align/final` exists).",
    )
    checkpoint: Path | None = Field(
        None, description="An alignment checkpoint to use instead of training `recipe`."
    )

    def model_post_init(self, context: Any) -> None:
        if self.recipe is None and self.checkpoint is None:
            raise ValueError("give align.recipe or align.checkpoint")


class GenerateDataConfig(LoadingConfig):
    """Which reports (and, for few-shot and supervised settings, images) train the generator."""

    sources: tuple[DataSource, ...] = Field(min_length=1, description="Data sets to read.")
    train_split: str = Field("train", description="Split trained on.")
    val_split: str = Field("val", description="Split evaluated on during training.")
    batch_size: int = Field(32, gt=1, description="Reports per step (all processes together).")
    image_pairs: float = Field(
        0.0, ge=0, le=1,
        description="Share of the training images whose embeddings, paired with their "
        "reports in the generator's languages, also train it: 0 is the zero-shot setting "
        "(text only), 0.1 few-shot, 1 supervised.",
    )
    bank_size: int | None = Field(
        None, gt=0,
        description="Most training reports the memory bridge keeps per language (and per "
        "modality and language), drawn at random with the run's seed; None keeps them all. "
        "The bank is stored with the model and searched for every image it reports on.",
    )


class GeneratorRecipeModel(GeneratorConfig):
    """The generator a recipe trains: its architecture, and which modalities it is
    conditioned on (saved in the checkpoint as a plain generator config)."""

    condition_on_modality: bool = Field(
        True,
        description="Give the generator a learnt token per imaging modality, so that each "
        "modality's report style (CT, chest X-ray) is learnt apart: `modalities` left empty "
        "is then filled with the alignment model's.  False trains one style per language.",
    )

    @model_validator(mode="after")
    def _modalities_need_conditioning(self) -> GeneratorRecipeModel:
        if self.modalities and not self.condition_on_modality:
            raise ValueError("modalities are given but condition_on_modality is false")
        return self

    def generator_config(self, align_modalities: tuple[str, ...]) -> GeneratorConfig:
        """The checkpoint's generator config, with the alignment model's `align_modalities`
        when the generator is conditioned on modality and names none itself."""
        fields = self.model_dump(exclude={"condition_on_modality"})
        if self.condition_on_modality and not self.modalities:
            fields["modalities"] = tuple(align_modalities)
        return GeneratorConfig.model_validate(fields)


class GenerateRecipe(_Recipe):
    """Stage 2: a report generator trained on the frozen text space of an alignment model."""

    stage: Literal["generate"] = Field(description="Training stage this recipe is for.")
    align: AlignmentSource
    data: GenerateDataConfig
    model: GeneratorRecipeModel
    decode: DecodeConfig = Field(
        default_factory=DecodeConfig, description="Default decoding, saved with the model."
    )
    train: TrainConfig


RECIPE_STAGES: dict[str, type[AlignRecipe | GenerateRecipe]] = {
    "align": AlignRecipe, "generate": GenerateRecipe,
}


def available_recipes() -> list[str]:
    """Names of the recipes shipped with m3fm."""
    return sorted(path.stem for path in RECIPE_DIR.glob("*.toml"))


def recipe_path(name_or_path: str) -> Path:
    """The file of a shipped recipe by name, or a recipe file given by path."""
    shipped = RECIPE_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise UnknownNameError("recipe", name_or_path, available_recipes())


def load_recipe(
    name_or_path: str, overrides: dict[str, str] | None = None
) -> AlignRecipe | GenerateRecipe:
    """Read, override and validate a recipe; raises ConfigError naming file and field."""
    path = recipe_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read recipe: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    _resolve_beside(data, path)
    for key, value in (overrides or {}).items():
        _set_path(data, key, _parse_value(value), path)
    stage = data.get("stage")
    if stage not in RECIPE_STAGES:
        raise ConfigError(f"{path}: stage must be one of {', '.join(RECIPE_STAGES)}, got {stage!r}")
    try:
        return RECIPE_STAGES[stage].model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc


def _resolve_beside(data: dict[str, Any], path: Path) -> None:
    """Let a recipe file name its alignment recipe by a path relative to itself, so recipes
    shipped together (as a plugin's are) work from any working directory.

    A recipe names a shipped recipe or a file in its own folder, never one elsewhere: a recipe
    from someone else reads nothing outside what it came with.  A ``--set`` value is the
    user's own and is applied afterwards, as a path from the working directory.
    """
    align = data.get("align")
    if not isinstance(align, dict) or not isinstance(align.get("recipe"), str):
        return
    name = align["recipe"]
    if name in available_recipes():
        return
    if not (path.parent / name).resolve().is_relative_to(path.parent.resolve()):
        raise ConfigError(
            f"{path}: align.recipe {name!r} is outside the recipe's folder; name a shipped "
            "recipe or a file beside this one"
        )
    align["recipe"] = str(path.parent / name)


def _parse_value(value: str) -> Any:
    """A --set value as YAML, except that only true/false are booleans: YAML 1.1 would turn
    the `on`/`off`/`auto` switches (e.g. train.amp=off) into booleans the field refuses."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
        return value
    return parsed


def _set_path(data: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: --set {dotted}: {part!r} is not a section")
        node = child
    node[leaf] = value
