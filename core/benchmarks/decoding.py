"""How much batching and the key/value cache speed up report writing.

Times the ``m3fm run`` path (inputs loaded, embedded and decoded ``batch_size`` at a time with
the key/value cache) against the same model decoding one input at a time without the cache,
on the same inputs, and prints both and their ratio::

    python -m m3fm.benchmarks.decoding --inputs 64 --lang zh
    python -m m3fm.benchmarks.decoding --checkpoint runs/zh-zeroshot/final --images DIR

Without ``--images`` the inputs are copies of pydicom's sample CT slice (``CT_small.dcm``).
Both runs write reports of the same length: the lengths are printed, so a speed-up that came
from shorter reports would show.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import click
import torch

from m3fm.analysis import Analysis, analyse_inputs
from m3fm.generation.reporting import ReportModel
from m3fm.imaging import preprocess
from m3fm.models import default_model_dir
from m3fm.registry import get_registry


def sample_inputs(count: int, folder: Path) -> list[Path]:
    """`count` copies of pydicom's sample CT slice (distinct files, as a user would pass)."""
    from pydicom.data import get_testdata_file

    sample = Path(get_testdata_file("CT_small.dcm"))
    paths = [folder / f"slice-{index:03d}.dcm" for index in range(count)]
    for path in paths:
        shutil.copyfile(sample, path)
    return paths


def batched_cached(model: ReportModel, inputs: list[Path], modality: str, lang: str
                   ) -> list[str]:
    """What ``m3fm run`` does."""
    return [r["report"] for r in analyse_inputs(model, inputs, Analysis(modality, lang))]


def one_by_one_uncached(model: ReportModel, inputs: list[Path], modality: str, lang: str
                        ) -> list[str]:
    """The baseline: each input on its own, every step recomputing attention over the prefix."""
    spec = get_registry().modality(modality)
    decode = model.decode.model_copy(update={"batch_size": 1})
    reports = []
    for path in inputs:
        embedding = model.embed_images([preprocess(spec, path)], modality=modality)
        reports += model.reports_from_embeddings(embedding, lang, decode, use_cache=False,
                                                 modality=modality)
    return reports


def timed(function, *args) -> tuple[float, list[str]]:
    start = time.perf_counter()
    reports = function(*args)
    return time.perf_counter() - start, reports


def workload_options(command):
    """The options every decoding benchmark shares: the model, the inputs, the threads."""
    options = [
        click.option("--checkpoint", type=click.Path(path_type=Path, exists=True,
                                                     file_okay=False),
                     help="Report model; default: the bundled m3fm-small."),
        click.option("--plugin", "modality", default="ct", show_default=True),
        click.option("--lang", default="zh", show_default=True),
        click.option("--inputs", "count", default=64, show_default=True,
                     help="Number of inputs."),
        click.option("--images", type=click.Path(path_type=Path, exists=True, file_okay=False),
                     help="Take the first --inputs images of this folder instead of sample "
                     "copies."),
        click.option("--threads", type=int, help="torch CPU threads (default: torch's choice)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def loaded_model(checkpoint: Path | None, threads: int | None, lean: bool = True
                 ) -> ReportModel:
    """The report model to measure (the bundled one by default), with `threads` set; on the
    plain-torch networks unless not `lean` (see :meth:`ReportModel.from_pretrained`)."""
    if threads:
        torch.set_num_threads(threads)
    return ReportModel.from_pretrained(checkpoint or default_model_dir(), lean=lean)


def benchmark_inputs(images: Path | None, modality: str, count: int, scratch: Path
                     ) -> list[Path]:
    """The first `count` files of `images` that `modality` reads, else `count` sample copies
    written to `scratch`."""
    if images is None:
        return sample_inputs(count, scratch)
    spec = get_registry().modality(modality)
    return sorted(p for p in images.rglob("*") if p.is_file() and spec.accepts(p))[:count]


@click.command()
@workload_options
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(checkpoint: Path | None, modality: str, lang: str, count: int, images: Path | None,
         threads: int | None, as_json: bool) -> None:
    """Time batched, cached decoding against one-by-one uncached decoding."""
    model = loaded_model(checkpoint, threads)
    with tempfile.TemporaryDirectory() as scratch:
        inputs = benchmark_inputs(images, modality, count, Path(scratch))
        batched_cached(model, inputs[:2], modality, lang)  # warm-up: lazy imports, allocator
        fast, fast_reports = timed(batched_cached, model, inputs, modality, lang)
        slow, slow_reports = timed(one_by_one_uncached, model, inputs, modality, lang)
    tokenizer = model.generator.tokenizer
    figures = {
        "inputs": len(inputs),
        "batch_size": model.decode.batch_size,
        "num_beams": model.decode.num_beams,
        "threads": torch.get_num_threads(),
        "batched_cached_s": round(fast, 3),
        "one_by_one_uncached_s": round(slow, 3),
        "speedup": round(slow / fast, 2),
        "mean_report_tokens": round(
            sum(len(tokenizer.tokenize(r)) for r in fast_reports) / len(fast_reports), 1),
        "same_reports": fast_reports == slow_reports,
    }
    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo(f"{figures['inputs']} inputs, {figures['mean_report_tokens']} tokens per report, "
               f"{figures['threads']} threads")
    click.echo(f"m3fm run (batches of {figures['batch_size']}, KV cache): "
               f"{fast:.2f} s ({len(inputs) / fast:.1f} inputs/s)")
    click.echo(f"one at a time, no KV cache:          {slow:.2f} s "
               f"({len(inputs) / slow:.1f} inputs/s)")
    click.echo(f"speed-up: {slow / fast:.1f}x; identical reports: {figures['same_reports']}")


if __name__ == "__main__":
    main()
