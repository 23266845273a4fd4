"""The `m3fm` command line.

Every failure a user can cause is reported as one line, ``m3fm: error: <what and how to fix>``,
with exit code 2 for wrong arguments or names and 1 for anything else; a traceback is shown
only with ``M3FM_DEBUG=1``.  Commands that print results take ``--json`` for machines.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from m3fm import __version__
from m3fm.registry import (
    KINDS,
    PLUGIN_API_VERSION,
    M3fmError,
    NotAvailableError,
    UnknownNameError,
    UsageError,
    get_registry,
)

console = Console()
err_console = Console(stderr=True)

PathArg = click.Path(path_type=Path)


def _print_json(payload: object) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str))


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="m3fm")
def cli() -> None:
    """m3fm: medical foundation models across imaging domains and report languages.

    Modalities (cxr, ct, ...) and languages (en, zh, ...) are plugins; `m3fm plugins list`
    shows what is installed.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def version(as_json: bool) -> None:
    """Show the versions of m3fm, its plugin API and the runtime."""
    import torch

    info = {
        "m3fm": __version__,
        "plugin_api": PLUGIN_API_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if as_json:
        _print_json(info)
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in info.items()))


# --- plugins -------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """Inspect installed plugins (modalities, languages, dataset formats)."""


def _plugin_rows() -> list[dict[str, str]]:
    registry = get_registry()
    rows = []
    for provided in registry.all_provided():
        others = [
            p.plugin.name for p in registry.providers(provided.kind, provided.name)
            if p.plugin is not provided.plugin
        ]
        rows.append({
            "name": provided.name,
            "kind": provided.kind,
            "plugin": provided.plugin.name,
            "source": provided.plugin.source,
            "status": f"conflict with {', '.join(others)}" if others else "ok",
        })
    for info in registry.plugins.values():
        if info.status != "ok":
            rows.append({
                "name": info.name, "kind": "plugin", "plugin": info.name,
                "source": info.source, "status": f"{info.status}: {info.error}",
            })
    return rows


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_list(as_json: bool) -> None:
    """List every modality, language and dataset format, with the plugin that provides it.

    Plugins that failed to load or need another plugin-API version are listed with the reason.
    """
    rows = _plugin_rows()
    if as_json:
        _print_json(rows)
        return
    _table(
        f"m3fm {__version__} plugins (plugin API {PLUGIN_API_VERSION})",
        ["name", "kind", "plugin", "source", "status"],
        [list(row.values()) for row in rows],
    )


def _describe(kind: str, spec: object) -> dict[str, object]:
    """A spec's declared data, without its callables."""
    data = {
        key: value for key, value in spec.model_dump().items()  # type: ignore[attr-defined]
        if not callable(value)
    }
    return {"kind": kind, **data}


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_show(name: str, as_json: bool) -> None:
    """Show what a modality, language, dataset format or plugin named NAME declares."""
    registry = get_registry()
    found = [
        _describe(provided.kind, provided.spec) | {"plugin": provided.plugin.name,
                                                  "source": provided.plugin.source}
        for kind in KINDS for provided in registry.providers(kind, name)
    ]
    info = registry.plugins.get(name)
    if info is not None:
        found.append({"kind": "plugin", "name": info.name, "module": info.module,
                      "source": info.source, "status": info.status, "error": info.error,
                      "provides": info.provides})
    if not found:
        known = {n for kind in KINDS for n in registry.names(kind)} | set(registry.plugins)
        raise UnknownNameError("plugin, modality, language or dataset format", name, list(known))
    if as_json:
        _print_json(found)
        return
    for entry in found:
        _table(f"{entry['kind']} {name}", ["field", "value"],
               [[key, json.dumps(value, ensure_ascii=False, default=str)]
                for key, value in entry.items() if key != "kind"])


# --- inputs and data -----------------------------------------------------------------------


@cli.command()
@click.option("--plugin", "modality", required=True, help="Modality plugin, e.g. ct or cxr.")
@click.argument("paths", nargs=-1, required=True, type=PathArg)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
def preprocess(modality: str, paths: tuple[Path, ...], as_json: bool) -> None:
    """Load inputs through a modality plugin and report the tensors it produces.

    Use it to check that your files (PNG/JPEG, DICOM, NIfTI, DICOM series folders) load as
    expected before training or inference. Inputs that fail are reported one per line; the
    exit code is 1 if any failed.
    """
    from m3fm.imaging import preprocess as load_input
    from m3fm.inputs import collect_inputs
    from m3fm.progress import track

    spec = get_registry().modality(modality)
    results = []
    for path in track(collect_inputs(spec, paths), "preprocessing"):
        try:
            tensor = load_input(spec, path)
        except M3fmError as exc:
            results.append({"input": str(path), "error": str(exc)})
            continue
        results.append({
            "input": str(path), "shape": list(tensor.shape), "dtype": str(tensor.dtype),
            "min": round(tensor.min().item(), 4), "max": round(tensor.max().item(), 4),
            "mean": round(tensor.mean().item(), 4),
        })
    if as_json:
        for result in results:
            click.echo(json.dumps(result, ensure_ascii=False))
    else:
        columns = ["input", "shape", "min", "max", "mean", "error"]
        _table(f"{modality}: {len(results)} inputs", columns,
               [[str(r.get(column, "")) for column in columns] for r in results])
    if any("error" in r for r in results):
        sys.exit(1)


@cli.group()
def data() -> None:
    """Read data sets in the built-in or plugin-provided formats."""


@data.command("summary")
@click.argument("path", type=PathArg)
@click.option("--format", "format_name", help="Dataset format; detected when omitted.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def data_summary(path: Path, format_name: str | None, as_json: bool) -> None:
    """Count the records of a data set by split, modality and language, and list bad rows."""
    from m3fm.data import read_dataset, summarize

    result = read_dataset(path, format_name)
    counts = summarize(result)
    problems = [problem.model_dump() for problem in result.problems]
    if as_json:
        _print_json({"counts": counts, "problems": problems})
        return
    if counts:
        _table(f"{path}: {len(result.records)} records", list(counts[0]),
               [[str(value) for value in row.values()] for row in counts])
    for problem in problems:
        err_console.print(f"[yellow]skipped[/] {problem['source']}: {problem['message']}",
                          highlight=False)


# --- the engine's verbs --------------------------------------------------------------------


@cli.command()
@click.option("--plugin", "modality", required=True, help="Modality plugin, e.g. ct or cxr.")
@click.option("--lang", "language", default="en", show_default=True,
              help="Report language, e.g. en or zh.")
@click.option("--checkpoint", type=PathArg, help="Model directory; default: the bundled model.")
@click.option("--out", type=PathArg, help="Write results as JSON Lines to this file.")
@click.argument("paths", nargs=-1, required=True, type=PathArg)
def run(modality: str, language: str, checkpoint: Path | None, out: Path | None,
        paths: tuple[Path, ...]) -> None:
    """Write a report in --lang for each image, DICOM file, NIfTI volume or folder in PATHS."""
    from m3fm.inputs import collect_inputs

    registry = get_registry()
    spec = registry.modality(modality)
    registry.language(language)
    collect_inputs(spec, paths)
    raise NotAvailableError(
        f"m3fm {__version__} cannot generate reports yet: the MultiMedLM engine and a bundled "
        "model are not part of this release"
    )


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


@cli.command()
@click.option("--recipe", required=True, help="Name of a shipped recipe, or a recipe file.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data directory.")
@click.option("--out", required=True, type=PathArg, help="Run directory for checkpoints and logs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field; repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def train(recipe: str, data_dir: Path, out: Path, overrides: tuple[str, ...], resume: bool) -> None:
    """Train an alignment or report-generation model from a recipe."""
    _parse_overrides(overrides)
    raise NotAvailableError(
        f"m3fm {__version__} cannot train yet: the alignment and generation engines are not "
        "part of this release"
    )


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path, exists=True),
              help="Model directory.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data directory.")
@click.option("--split", default="val", show_default=True, help="Split to evaluate on.")
@click.option("--task", type=click.Choice(["retrieval", "report", "diagnosis"]), required=True)
@click.option("--lang", "language", default="en", show_default=True, help="Report language.")
def evaluate(checkpoint: Path, data_dir: Path, split: str, task: str, language: str) -> None:
    """Evaluate a model on a data split: retrieval, report generation or diagnosis."""
    get_registry().language(language)
    raise NotAvailableError(
        f"m3fm {__version__} cannot evaluate models yet: no model engine is part of this release"
    )


# --- entry point ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    click.echo(f"m3fm: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning every expected failure into one line and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="m3fm", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "m3fm"
        _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except M3fmError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        if os.environ.get("M3FM_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc}"
              " (set M3FM_DEBUG=1 for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)
