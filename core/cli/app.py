"""The `m3fm` command group and what every verb shares: consoles, JSON and table output.

Each verb lives in a module of this package by what it works on (plugins, inputs, the report
model, training, evaluation); :mod:`m3fm.cli` imports them all and runs them.
"""

from __future__ import annotations

import platform
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import m3fm
from m3fm.outputs import json_text, shown_path
from m3fm.registry import PLUGIN_API_VERSION

console = Console()
err_console = Console(stderr=True)

PathArg = click.Path(path_type=Path)


class ModelFolder(click.Path):
    """A ``--checkpoint`` folder: a model, or a training run's output folder, whose ``final/``
    model is meant (m3fm says which folder it uses)."""

    name = "model folder"

    def __init__(self) -> None:
        super().__init__(path_type=Path, exists=True, file_okay=False)

    def convert(self, value, param, ctx) -> Path:
        folder = super().convert(value, param, ctx)
        final = folder / "final"
        if not (folder / "config.json").is_file() and (final / "config.json").is_file():
            click.echo(f"m3fm: using {shown_path(final)}, the final model of the training run "
                       f"in {shown_path(folder)}", err=True)
            return final
        if not (folder / "config.json").is_file():
            self.fail(f"{shown_path(folder)} holds no m3fm model (no config.json): give a "
                      "model folder, such as a training run's final/", param, ctx)
        return folder


def print_json(payload: object) -> None:
    click.echo(json_text(payload, indent=2))


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    shown = Table(title=title, title_justify="left")
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*row)
    console.print(shown)


def cells(rows: list[dict], columns: list[str]) -> list[list[str]]:
    """Table cells: floats to 3 decimals, None as n/a."""
    return [["n/a" if row[c] is None else f"{row[c]:.3f}" if isinstance(row[c], float)
             else str(row[c]) for c in columns] for row in rows]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="m3fm", prog_name="m3fm")
def cli() -> None:
    """m3fm: medical foundation models across imaging domains and report languages.

    Modalities (cxr, ct, ...) and languages (en, zh, ...) are plugins; `m3fm plugins list`
    shows what is installed.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--cuda", is_flag=True,
              help="Also import torch to say whether it sees a CUDA GPU (slower).")
def version(as_json: bool, cuda: bool) -> None:
    """Show the versions of m3fm, its plugin API and the runtime.

    torch's version comes from its package metadata, so that printing a version does not
    import torch (a second and 600 MB); `--cuda` imports it to ask for a GPU.
    """
    from importlib.metadata import version as installed_version

    info: dict[str, object] = {
        "m3fm": m3fm.__version__,
        "plugin_api": PLUGIN_API_VERSION,
        "python": platform.python_version(),
        "torch": installed_version("torch"),
    }
    if cuda:
        import torch

        info["cuda_available"] = torch.cuda.is_available()
    if as_json:
        print_json(info)
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in info.items()))
