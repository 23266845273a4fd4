"""Training a loaded recipe: the stage it names, through the generic training loop.

Shared by `m3fm train` and `m3fm benchmark`, so a benchmark trains exactly what a user would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3fm.recipes import AlignRecipe, GenerateRecipe, LoadingConfig, load_recipe
from m3fm.registry import InputError
from m3fm.training import FINAL_DIR, TrainResult
from m3fm.training import train as run_training
from m3fm.training.distributed import Ranks
from m3fm.training.loop import hold_run_directory

log = logging.getLogger(__name__)


def train_recipe(
    recipe: AlignRecipe | GenerateRecipe, data_dir: Path, out: Path, *, resume: bool = False,
    ranks: Ranks | None = None, notify: Callable[[str], None] = lambda message: None,
) -> TrainResult:
    """Train `recipe` on `data_dir` into the run directory `out` (``OUT/final`` at the end).

    A generate recipe without ``align.checkpoint`` first trains (or reuses) its alignment
    recipe in ``OUT/align``; `notify` hears about that.  `out` is held for the whole call, so a
    second process given it is refused before it reads any data.
    """
    ranks = ranks or Ranks.from_environment()
    with hold_run_directory(out, ranks):
        if isinstance(recipe, AlignRecipe):
            return _train_alignment(recipe, data_dir, out, resume, ranks)
        return _train_generator(recipe, data_dir, out, resume, ranks, notify)


def _batch_settings(recipe: AlignRecipe | GenerateRecipe) -> dict[str, Any]:
    """The recipe's data settings that decide the batches, by their ``--set`` names: a resumed
    run must keep them.  Not the validation split, nor how images are loaded (workers, cache),
    which never changes a batch: a run may resume with more workers."""
    data = recipe.data.model_dump(mode="json", exclude={"val_split", *LoadingConfig.model_fields})
    return {f"data.{name}": value for name, value in data.items()}


def _train_alignment(recipe: AlignRecipe, data_dir: Path, out: Path, resume: bool,
                     ranks: Ranks) -> TrainResult:
    from m3fm.alignment.task import AlignmentTask

    task = AlignmentTask(recipe, data_dir, rank=ranks.rank, world_size=ranks.world_size)
    result = run_training(task.training_task(str(data_dir)), recipe.train, out, resume=resume,
                          batch_settings=_batch_settings(recipe))
    if ranks.is_main:
        _describe_training_images(recipe, data_dir, result.checkpoint)
    return result


def _describe_training_images(recipe: AlignRecipe, data_dir: Path, final: Path) -> None:
    """Give the final model its out-of-distribution description (train split described,
    threshold on the val split); without images in both splits it has none, said as a
    warning, since the model itself is fine."""
    from m3fm.clinical.ood import calibrate
    from m3fm.data import read_sources

    data = {"data": str(data_dir), "recipe": recipe.name,
            "sources": [source.model_dump(mode="json") for source in recipe.data.sources]}
    try:
        calibrate(final, read_sources(recipe.data.sources, data_dir), recipe.data.train_split,
                  recipe.data.val_split, data)
    except InputError as exc:
        log.warning("%s has no out-of-distribution description: %s", final, exc)


def _train_generator(recipe: GenerateRecipe, data_dir: Path, out: Path, resume: bool,
                     ranks: Ranks, notify: Callable[[str], None]) -> TrainResult:
    """Stage 2, after training (or reusing) the alignment model it decodes from."""
    from m3fm.generation.task import GenerationTask

    align_dir = recipe.align.checkpoint
    if align_dir is None:
        align_out = out / "align"
        align_dir = align_out / FINAL_DIR
        if not align_dir.is_dir():
            notify(f"training alignment recipe {recipe.align.recipe} into {align_out}")
            started = (align_out / "checkpoints").is_dir()
            _train_alignment(load_recipe(recipe.align.recipe), data_dir, align_out,
                             resume or started, ranks)
    task = GenerationTask(recipe, data_dir, align_dir, rank=ranks.rank,
                          world_size=ranks.world_size)
    return run_training(task.training_task(str(data_dir), align_dir), recipe.train, out,
                        resume=resume, batch_settings=_batch_settings(recipe))
