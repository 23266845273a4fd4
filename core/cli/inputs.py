"""`m3fm preprocess` and `m3fm data`: check inputs and data sets before using them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from m3fm.cli.app import PathArg, cli, err_console, print_json, table
from m3fm.cli.results import emit_results
from m3fm.outputs import shown_path
from m3fm.registry import M3fmError, get_registry


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
    spec = get_registry().modality(modality)
    results: list[dict] = []
    tally = emit_results(_tensor_summaries(spec, paths, results), out=None,
                         as_json=as_json, render=None)
    if not as_json:
        columns = ["input", "shape", "min", "max", "mean", "error"]
        table(f"{modality}: {tally.done} inputs", columns,
              [[shown_path(str(r.get(column, ""))) for column in columns] for r in results])
    if tally.failed:
        sys.exit(1)


def _tensor_summaries(spec, paths: tuple[Path, ...], kept: list[dict]) -> Iterator[dict]:
    """What each input loads as (shape, dtype, range) or its error, one at a time; each is
    also kept in `kept` for the table shown at the end."""
    from m3fm.imaging import preprocess as load_input
    from m3fm.inputs import collect_inputs
    from m3fm.progress import track

    for path in track(collect_inputs(spec, paths), "preprocessing"):
        try:
            tensor = load_input(spec, path)
        except M3fmError as exc:
            result = {"input": str(path), "error": str(exc)}
        else:
            result = {
                "input": str(path), "shape": list(tensor.shape), "dtype": str(tensor.dtype),
                "min": round(tensor.min().item(), 4), "max": round(tensor.max().item(), 4),
                "mean": round(tensor.mean().item(), 4),
            }
        kept.append(result)
        yield result


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
        print_json({"counts": counts, "problems": problems})
        return
    if counts:
        table(f"{path}: {len(result.records)} records", list(counts[0]),
               [[str(value) for value in row.values()] for row in counts])
    for problem in problems:
        err_console.print(f"[yellow]skipped[/] {problem['source']}: {problem['message']}",
                          highlight=False)

