"""`m3fm calibrate-ood`: (re)compute a checkpoint's out-of-distribution description."""

from __future__ import annotations

from pathlib import Path

import click

from m3fm.cli.app import ModelFolder, cli, print_json, table
from m3fm.registry import UsageError


@cli.command("calibrate-ood")
@click.option("--checkpoint", required=True, type=ModelFolder(),
              help="Report or alignment model folder; the description goes into its "
              "alignment folder (align/ of a report model).")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data directory the model was trained from; its recipe's sources are "
              "relative to it.")
@click.option("--split-train", help="Split described; default: the one the model trained on.")
@click.option("--split-val", help="Split the threshold is chosen on; default: the model's "
              "validation split.")
@click.option("--max-flagged", default=0.05, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="Most validation images the threshold may flag, as a fraction.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def calibrate_ood(checkpoint: Path, data_dir: Path, split_train: str | None,
                  split_val: str | None, max_flagged: float, as_json: bool) -> None:
    """Describe the model's training images per modality and choose the threshold above which
    `m3fm run` flags an input as out of distribution (at most --max-flagged of validation
    images). Writes ood.safetensors and ood.json into the alignment folder."""
    from m3fm.clinical.ood import calibrate
    from m3fm.data import read_sources
    from m3fm.recipes import DataSource

    align_dir, recipe = _alignment_training(checkpoint)
    data = recipe["data"]
    sources = [DataSource.model_validate(source) for source in data["sources"]]
    train_split = split_train or data.get("train_split", "train")
    val_split = split_val or data.get("val_split", "val")
    if train_split == val_split:
        raise UsageError(f"--split-train and --split-val are both {train_split!r}; the "
                         "threshold must be chosen on images the description was not fit on")
    detector = calibrate(align_dir, read_sources(sources, data_dir), train_split, val_split,
                         {"data": str(data_dir), "recipe": recipe.get("name"),
                          "sources": [source.model_dump(mode="json") for source in sources]},
                         max_flagged)
    rows = [{"modality": modality, "train_images": d.counts["train"],
             "val_images": d.counts["val"], "threshold": round(d.threshold, 3),
             "val_flag_rate": round(d.counts["val_flagged"] / d.counts["val"], 4)}
            for modality, d in detector.descriptions.items()]
    if as_json:
        print_json({"checkpoint": str(align_dir), "data": detector.data, "modalities": rows})
        return
    table(f"out-of-distribution description in {align_dir}",
          ["modality", "train images", "val images", "threshold", "val flagged"],
          [[row["modality"], str(row["train_images"]), str(row["val_images"]),
            f"{row['threshold']:.3f}", f"{row['val_flag_rate']:.1%}"] for row in rows])


def _alignment_training(checkpoint: Path) -> tuple[Path, dict]:
    """The alignment folder of `checkpoint` and the recipe (as a dict) it was trained by:
    from its own metadata.json, else, for a report model, from the alignment recipe or
    checkpoint that the report model's metadata names."""
    from m3fm.checkpoint import METADATA_NAME, read_metadata
    from m3fm.generation.reporting import ALIGN_DIR, is_report_model
    from m3fm.recipes import load_recipe

    align_dir = checkpoint / ALIGN_DIR if is_report_model(checkpoint) else checkpoint
    candidates = [align_dir]
    if align_dir != checkpoint and (checkpoint / METADATA_NAME).is_file():
        align = read_metadata(checkpoint).get("task", {}).get("recipe", {}).get("align", {})
        if align.get("checkpoint"):
            candidates.append(Path(align["checkpoint"]))
        elif align.get("recipe"):
            return align_dir, load_recipe(align["recipe"]).model_dump(mode="json")
    for folder in candidates:
        if (folder / METADATA_NAME).is_file():
            recipe = read_metadata(folder).get("task", {}).get("recipe")
            if isinstance(recipe, dict) and recipe.get("stage") == "align":
                return align_dir, recipe
    raise UsageError(f"{checkpoint}: its metadata.json does not say which alignment recipe "
                     "and data it was trained on, so there are no training images to describe")
