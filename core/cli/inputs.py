"""`m3fm preprocess` and `m3fm data`: check inputs and data sets before using them."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from m3fm.cli.app import PathArg, cli, err_console, print_json, table
from m3fm.cli.results import emit_results
from m3fm.outputs import shown_path
from m3fm.registry import M3fmError

if TYPE_CHECKING:
    from m3fm.data.cache import PreprocessCache
    from m3fm.registry import ModalitySpec


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
    from m3fm.registry import get_registry

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




@data.command("cache")
@click.argument("paths", nargs=-1, type=PathArg)
@click.option("--plugin", "modality",
              help="Modality plugin of PATHS (ct, cxr, ...); with --data, cache only its images.")
@click.option("--data", "data_path", type=PathArg,
              help="A data set: cache every record's image through the record's modality.")
@click.option("--format", "format_name", help="Dataset format of --data; detected when omitted.")
@click.option("--split", "splits", multiple=True, help="Only this split of --data (repeatable).")
@click.option("--cache-dir", help="Cache folder; default $M3FM_CACHE, else the user's cache "
              "folder (…/m3fm/preprocessed).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes that preprocess in parallel (0: this one).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def data_cache(paths: tuple[Path, ...], modality: str | None, data_path: Path | None,
               format_name: str | None, splits: tuple[str, ...], cache_dir: str | None,
               workers: int, as_json: bool) -> None:
    """Preprocess images into the preprocessing cache, so that training reads them back fast.

    Give files and folders with --plugin, or a data set with --data. Under torchrun each rank
    takes its share (input i goes to rank i mod WORLD_SIZE), and --workers processes share a
    rank's. Inputs that fail are reported one per line; the exit code is 1 if any failed or
    could not be stored.
    """
    from m3fm.data.cache import PreprocessCache
    from m3fm.data.streaming import check_workers
    from m3fm.progress import track
    from m3fm.training.distributed import Ranks

    if bool(paths) == (data_path is not None):
        raise click.UsageError("give PATHS (with --plugin) or --data, one of the two")
    if paths and modality is None:
        raise click.UsageError("PATHS need --plugin to say which modality reads them")
    if data_path is None and (format_name or splits):
        raise click.UsageError("--format and --split apply to --data only")
    cache = PreprocessCache.resolve(cache_dir)
    if cache is None:
        raise click.UsageError("the preprocessing cache is off (--cache-dir or M3FM_CACHE is "
                               "'off'); there is nothing to fill")
    ranks = Ranks.from_environment()
    inputs = (_inputs_to_cache(paths, modality) if data_path is None
              else _records_to_cache(data_path, format_name, splits, modality))
    jobs = [job for index, job in enumerate(inputs)
            if index % ranks.world_size == ranks.rank]
    statuses: Counter[str] = Counter()
    filled = _fill(cache, jobs, check_workers(workers), statuses)
    tally = emit_results(track(filled, "caching", total=len(jobs)), out=None, as_json=False,
                         render=None)
    entries, size = cache.disk_usage()
    summary = {
        "cache": str(cache.root), "rank": ranks.rank, "world_size": ranks.world_size,
        "inputs": tally.done, "cached": statuses["cached"],
        "already_cached": statuses["already cached"], "not_stored": statuses["not stored"],
        "failed": tally.failed, "entries": entries, "bytes": size,
    }
    _show_cache_summary(summary, as_json)
    if tally.failed or summary["not_stored"]:
        sys.exit(1)


def _inputs_to_cache(paths: tuple[Path, ...], modality: str) -> Iterator[tuple[ModalitySpec, Path]]:
    """(modality, input) for each input PATHS name, folders expanded as `preprocess` does."""
    from m3fm.inputs import collect_inputs
    from m3fm.registry import get_registry

    spec = get_registry().modality(modality)
    for path in collect_inputs(spec, paths):
        yield spec, path


def _records_to_cache(data_path: Path, format_name: str | None, splits: tuple[str, ...],
                      modality: str | None) -> Iterator[tuple[ModalitySpec, Path]]:
    """(modality, image) for each image of the data set's records, each image once.

    With `modality`, only its records and those of unknown modality; without, a record of
    unknown modality is reported as skipped, since nothing says how to read its image.
    """
    from m3fm.data import read_dataset
    from m3fm.registry import get_registry

    result = read_dataset(data_path, format_name)
    for problem in result.problems:
        err_console.print(f"[yellow]skipped[/] {problem.source}: {problem.message}",
                          highlight=False)
    wanted: dict[tuple[str, Path], None] = {}
    for record in result.records:
        if record.image is None or (splits and record.split not in splits):
            continue
        if modality is not None and record.modality in (modality, None):
            wanted[modality, record.image] = None
        elif modality is None and record.modality is not None:
            wanted[record.modality, record.image] = None
        elif modality is None:
            err_console.print(f"[yellow]skipped[/] {record.source}: the record names no "
                              "modality; pass --plugin to read its image", highlight=False)
    registry = get_registry()
    for name, image in wanted:
        yield registry.modality(name), image


def _fill(cache: PreprocessCache, jobs: list[tuple[ModalitySpec, Path]], workers: int,
          statuses: Counter[str]) -> Iterator[dict]:
    """Each job's result, modality by modality, counting in `statuses` whether its image was
    cached now, already cached, or preprocessed but not stored (the cache is not writable)."""
    from m3fm.data.streaming import preprocessed

    by_modality: dict[str, tuple[ModalitySpec, list[Path]]] = {}
    for spec, path in jobs:
        by_modality.setdefault(spec.name, (spec, []))[1].append(path)
    for spec, paths in by_modality.values():
        present: set[Path] = set()
        for path, loaded in preprocessed(spec, _noting_present(cache, spec, paths, present),
                                         workers=workers, cache=cache):
            if isinstance(loaded, M3fmError):
                yield {"input": str(path), "modality": spec.name, "error": str(loaded)}
                continue
            status = ("already cached" if path in present
                      else "cached" if cache.contains(spec, path) else "not stored")
            statuses[status] += 1
            yield {"input": str(path), "modality": spec.name, "status": status}


def _noting_present(cache: PreprocessCache, spec: ModalitySpec, paths: list[Path],
                    present: set[Path]) -> Iterator[Path]:
    """`paths` as they are handed to the workers, adding to `present` those already cached."""
    for path in paths:
        if cache.contains(spec, path):
            present.add(path)
        yield path


def _show_cache_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    where = f" (rank {summary['rank']} of {summary['world_size']})" \
        if summary["world_size"] > 1 else ""
    columns = ["cached", "already cached", "not stored", "failed", "entries", "size on disk"]
    values = [summary["cached"], summary["already_cached"], summary["not_stored"],
              summary["failed"], summary["entries"], _megabytes(summary["bytes"])]
    table(f"preprocessing cache {shown_path(summary['cache'])}{where}", columns,
          [[str(value) for value in values]])


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
