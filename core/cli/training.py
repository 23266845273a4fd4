"""`m3fm train` and `m3fm recipes`."""

from __future__ import annotations

from pathlib import Path

import click

from m3fm.cli.app import PathArg, cli, table
from m3fm.registry import UsageError


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


@cli.command()
@click.option("--recipe", required=True,
              help="Name of a shipped recipe (see `m3fm recipes`) or a recipe file.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data directory; recipe data sources are relative to it.")
@click.option("--out", required=True, type=PathArg, help="Run directory for checkpoints and logs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field by dotted path, e.g. train.max_steps=50; repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def train(recipe: str, data_dir: Path, out: Path, overrides: tuple[str, ...], resume: bool) -> None:
    """Train a model from a recipe; start it under `torchrun` for several processes.

    Writes checkpoints to OUT/checkpoints, the final model to OUT/final and metrics to
    OUT/metrics.jsonl. Ctrl-C saves a checkpoint; `--resume` continues exactly where it stopped.
    """
    from m3fm.recipes import load_recipe
    from m3fm.recipes.training import train_recipe
    from m3fm.training.distributed import Ranks

    loaded = load_recipe(recipe, _parse_overrides(overrides))
    ranks = Ranks.from_environment()
    result = train_recipe(loaded, data_dir, out, resume=resume, ranks=ranks,
                          notify=lambda message: click.echo(message, err=True))
    if ranks.is_main:
        click.echo(f"trained {loaded.name} v{loaded.version} for {result.step} steps; "
                   f"final loss {result.loss:.4f}; model in {result.checkpoint}")
        _print_metrics(result.metrics)


def _print_metrics(metrics: dict[str, float]) -> None:
    if metrics:
        table("validation metrics", ["metric", "value"],
               [[name, f"{value:.4g}"] for name, value in sorted(metrics.items())])


@cli.command()
def recipes() -> None:
    """List the training recipes shipped with m3fm."""
    from m3fm.recipes import available_recipes, load_recipe

    rows = []
    for name in available_recipes():
        recipe = load_recipe(name)
        rows.append([name, str(recipe.version), recipe.stage, recipe.description])
    table("recipes", ["name", "version", "stage", "description"], rows)

