"""Whether m3fm's costs grow with the data: training, the image loader and ``m3fm run`` on
synthetic corpora of several sizes::

    python -m m3fm.benchmarks.scale                            # 2,000 and 20,000 pairs
    python -m m3fm.benchmarks.scale --sizes 500,5000 --steps 10 --run-inputs 100 --out DIR

For each size it writes a corpus (:mod:`m3fm.benchmarks.synthetic`: 128 px PNGs and templated
reports in a ``manifest.jsonl``) and measures

- the same short ``m3fm train`` run (a tiny alignment model): time from the process start to
  the first step, steady-state steps/s, peak RSS, and the size of its preprocessing cache;
- the loader alone (:func:`m3fm.data.streaming.preprocessed`): images/s with 0 and ``--workers``
  workers, and with ``--workers`` from a warm :class:`~m3fm.data.cache.PreprocessCache`;

then, on images of the largest corpus, ``m3fm run`` with 0 and ``--workers`` workers on
``--run-inputs`` inputs, and on ten times as many: the time to its first result, inputs/s
after it, and peak RSS.  Commands run in fresh processes, so no cache or allocator state
carries over.  It prints a table per section and the ratios between
sizes; ``--out DIR`` also writes ``results.json`` and ``results.md``.

Peak RSS is the kernel's ``ru_maxrss`` of the command: the largest resident size its main
process or any one worker reached, not their sum.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from tabulate import tabulate

from m3fm import __version__
from m3fm.benchmarks.suite import hardware
from m3fm.benchmarks.synthetic import SIDE, write_corpus
from m3fm.checkpoint import atomic_write_text, provenance
from m3fm.data.cache import CACHE_ENVIRONMENT, PreprocessCache
from m3fm.data.streaming import preprocessed
from m3fm.registry import M3fmError, ModalitySpec, get_registry
from m3fm.training.metrics import METRICS_NAME, read_metrics

TARGET_RSS_RATIO = 1.25
"""Training's peak RSS on the largest corpus may be at most this times that on the smallest."""

TARGET_FIRST_STEP_RATIO = 2.0
"""Likewise for the time to the first training step."""

WARM_UP_SHARE = 5
"""Steps/s is measured after the first 1/WARM_UP_SHARE of the steps (allocator, first batch)."""

RUN_FACTOR = 10
"""`m3fm run`'s memory is compared between ``--run-inputs`` and this many times more."""

POLL_S = 0.05
"""How often a command's results file is read to time the arrival of its results."""

BATCH_WRITE_S = 0.5
"""Longest a batch's results take to be written, one flushed line each; a batch of the
bundled model takes seconds to compute, so the next one cannot come this soon."""


class StepFailed(click.ClickException):
    """A sub-step failed; the message names it and gives the cause in one line."""


@dataclass(frozen=True)
class Settings:
    """What is measured, as given on the command line."""

    sizes: tuple[int, ...]
    modality: str = "cxr"
    steps: int = 30
    batch_size: int = 32
    workers: int = 2
    loader_images: int = 1000
    run_inputs: int = 128
    backbone: str = "resnet10t"
    input_size: int = 128
    seed: int = 0

    def command(self) -> str:
        """The command line that reproduces these settings."""
        return (f"python -m m3fm.benchmarks.scale --sizes {','.join(map(str, self.sizes))}"
                f" --modality {self.modality} --steps {self.steps}"
                f" --batch-size {self.batch_size} --workers {self.workers}"
                f" --loader-images {self.loader_images} --run-inputs {self.run_inputs}"
                f" --backbone {self.backbone} --input-size {self.input_size} --seed {self.seed}")


@dataclass(frozen=True)
class Finished:
    """A command that exited with 0: when it started (epoch seconds), how long it took, its
    peak RSS, and (when watched) when its results arrived: (seconds, lines so far) pairs."""

    started: float
    wall_s: float
    peak_rss_mb: float
    arrivals: tuple[tuple[float, int], ...] = ()

    def first_result_s(self) -> float:
        """Seconds from the start to the first result: start-up, model and first batch."""
        return self.arrivals[0][0]

    def results_per_s(self) -> float | None:
        """Results/s after the first batch, which leaves out the start-up; None when all
        arrived in one batch.  Lines seen within BATCH_WRITE_S of the first belong to the
        first batch: a poll can catch its lines half written."""
        first_s = self.arrivals[0][0]
        first = max(lines for seconds, lines in self.arrivals
                    if seconds <= first_s + BATCH_WRITE_S)
        last_s, last = self.arrivals[-1]
        return (last - first) / (last_s - first_s) if last > first else None


@contextlib.contextmanager
def sub_step(name: str) -> Iterator[None]:
    """Turn any failure inside into a one-line StepFailed naming `name`."""
    try:
        yield
    except Exception as exc:  # every failure, whatever its type, is reported as the step's
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise StepFailed(f"{name} failed: {cause}") from exc


def run_m3fm(args: list[str], log: Path, watch: Path | None = None) -> Finished:
    """Run ``m3fm ARGS`` in a fresh interpreter, its output into `log`, timing the lines that
    arrive in `watch` (a results file the command flushes line by line).

    Its default preprocessing cache is a new folder beside `log`: the user's own cache is
    neither used, which would make a second benchmark faster than the first, nor filled.
    ``os.wait4`` gives the resource usage of this one command (with its workers), where
    ``RUSAGE_CHILDREN`` would mix in every command run before it.
    """
    environment = os.environ | {CACHE_ENVIRONMENT: str(log.with_suffix(".cache"))}
    arrivals: list[tuple[float, int]] = []
    with log.open("w", encoding="utf-8") as output:
        started, clock = time.time(), time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "m3fm.cli", *args],
                                   stdout=output, stderr=subprocess.STDOUT, env=environment)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            now = time.perf_counter() - clock
            if watch is not None:
                _count_arrivals(watch, now, arrivals)
            if pid:
                break
            time.sleep(POLL_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise M3fmError(f"`m3fm {args[0]}` exited with {process.returncode}: {last} "
                        f"(full output in {log})")
    return Finished(started, now, usage.ru_maxrss / 1024, tuple(arrivals))


def _count_arrivals(watch: Path, now: float, arrivals: list[tuple[float, int]]) -> None:
    """Note (now, lines) when `watch` holds more complete lines than last time."""
    try:
        lines = watch.read_bytes().count(b"\n")
    except FileNotFoundError:  # not created yet
        return
    if lines and (not arrivals or lines > arrivals[-1][1]):
        arrivals.append((now, lines))


def recipe_text(settings: Settings) -> str:
    """A tiny alignment recipe on the corpus's manifest.

    Its validation split names no rows, so the run never evaluates: the figures are those of
    the training step, and evaluation's cost grows with the validation split by design.
    """
    return f"""\
name = "scale-benchmark"
version = 1
description = "Tiny alignment model for python -m m3fm.benchmarks.scale"
stage = "align"

[data]
sources = [{{ path = ".", format = "manifest" }}]
val_split = "none"
batch_size = {settings.batch_size}

[model]
modalities = ["{settings.modality}"]
languages = ["en"]
embed_dim = 128

[model.image]
backbone = "{settings.backbone}"
input_size = {settings.input_size}

[model.text]
vocab_size = 1000
hidden_size = 128
num_layers = 2
num_heads = 2
intermediate_size = 256
max_length = 64

[train]
max_steps = {settings.steps}
lr = 5e-4
log_every = 1
eval_every = 0
save_every = 0
"""


def measure_training(corpus: Path, work: Path, settings: Settings) -> dict[str, float]:
    """The short training run: time to its first step, steady steps/s, peak RSS, cache size."""
    recipe, out, cache = work / "recipe.toml", work / "train", work / "cache"
    recipe.write_text(recipe_text(settings), encoding="utf-8")
    done = run_m3fm([
        "train", "--recipe", str(recipe), "--data", str(corpus), "--out", str(out),
        "--set", f"data.workers={settings.workers}", "--set", f"data.cache_dir={cache}",
    ], work / "train.log")
    records = [r for r in read_metrics(out / METRICS_NAME) if r["kind"] == "train"]
    base, last = records[len(records) // WARM_UP_SHARE], records[-1]
    steps_per_s = (last["step"] - base["step"]) / (last["wall_time"] - base["wall_time"])
    return {
        "first_step_s": records[0]["wall_time"] - done.started,
        "steps_per_s": steps_per_s,
        "step_images_per_s": steps_per_s * settings.batch_size,
        "train_wall_s": done.wall_s,
        "train_peak_rss_mb": done.peak_rss_mb,
        "cache_mb": folder_bytes(cache) / 2**20,
    }


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def corpus_images(corpus: Path) -> list[Path]:
    """The corpus's image files in the order they were written."""
    return sorted((corpus / "images").glob("*.png"))


def measure_loader(corpus: Path, work: Path, settings: Settings) -> dict[str, float]:
    """Images/s of preprocessing alone: 0 and N workers from the files, N from a warm cache."""
    spec = get_registry().modality(settings.modality)
    paths = corpus_images(corpus)[:settings.loader_images]
    cache = PreprocessCache(work / "loader-cache")
    loaded_through(spec, paths[:2], 0, None)  # this process's lazy imports and set-up
    loaded_through(spec, paths, settings.workers, cache)  # fills the cache
    return {
        "loader_0_images_per_s": len(paths) / loaded_through(spec, paths, 0, None),
        "loader_n_images_per_s": len(paths) / loaded_through(spec, paths, settings.workers, None),
        "loader_n_cached_images_per_s":
            len(paths) / loaded_through(spec, paths, settings.workers, cache),
    }


def loaded_through(spec: ModalitySpec, paths: list[Path], workers: int,
                   cache: PreprocessCache | None) -> float:
    """Seconds to preprocess every path of `paths`; a file that fails fails the step."""
    start = time.perf_counter()
    for _, result in preprocessed(spec, paths, workers=workers, cache=cache):
        if isinstance(result, M3fmError):
            raise result
    return time.perf_counter() - start


def measure_run(corpus: Path, work: Path, settings: Settings) -> list[dict[str, float]]:
    """``m3fm run`` on M inputs with 0 and N workers, and on RUN_FACTOR × M with N.

    Inputs/s count the results after the first batch, over the time since it arrived, so that
    they leave out the start-up (imports, loading the model) that the first result includes.
    """
    images = corpus_images(corpus)
    plan = [(settings.run_inputs, 0), (settings.run_inputs, settings.workers),
            (settings.run_inputs * RUN_FACTOR, settings.workers)]
    rows: list[dict[str, float]] = []
    for count, workers in plan:
        folder = linked_inputs(images[:count], work / f"inputs-{count}")
        results = work / f"run-{count}-{workers}.jsonl"
        with sub_step(f"m3fm run on {count} inputs with {workers} workers"):
            done = run_m3fm([
                "run", "--plugin", settings.modality, "--workers", str(workers),
                "--out", str(results), str(folder),
            ], work / f"run-{count}-{workers}.log", watch=results)
            failed = sum("error" in json.loads(line) for line in results.open(encoding="utf-8"))
            if failed:
                raise M3fmError(f"{failed} of the inputs failed (see {results})")
        rows.append({"inputs": count, "workers": workers, "wall_s": done.wall_s,
                     "first_result_s": done.first_result_s(),
                     "inputs_per_s": done.results_per_s(), "peak_rss_mb": done.peak_rss_mb})
    return rows


def linked_inputs(images: list[Path], folder: Path) -> Path:
    """A folder holding hard links to `images`: ``m3fm run`` takes it as one argument, where
    thousands of paths could exceed the command-line limit."""
    folder.mkdir(exist_ok=True)
    for image in images:
        link = folder / image.name
        if not link.exists():
            os.link(image, link)
    return folder


def measure_size(size: int, work: Path, settings: Settings) -> dict[str, float]:
    """Every figure of one corpus size; the corpus stays in ``work/corpus``."""
    work.mkdir(parents=True, exist_ok=True)
    with sub_step(f"writing the {size}-pair corpus"):
        start = time.perf_counter()
        write_corpus(work / "corpus", size, modalities=[settings.modality], seed=settings.seed)
        row: dict[str, float] = {"size": size, "write_s": time.perf_counter() - start,
                                 "corpus_mb": folder_bytes(work / "corpus") / 2**20}
    with sub_step(f"training on {size} pairs"):
        row |= measure_training(work / "corpus", work, settings)
    with sub_step(f"the loader on {size} pairs"):
        row |= measure_loader(work / "corpus", work, settings)
    return row


def ratios(sizes: list[dict], runs: list[dict], settings: Settings
           ) -> dict[str, float | None]:
    """Each larger size against the smallest, and `m3fm run`'s worker speed-up and memory."""
    first = sizes[0]
    figures = {}
    for row in sizes[1:]:
        pair = f"{row['size']}/{first['size']}"
        for name, key in (("train_peak_rss", "train_peak_rss_mb"),
                          ("first_step", "first_step_s"), ("steps_per_s", "steps_per_s")):
            figures[f"{name} {pair}"] = _ratio(row[key], first[key])
    serial, parallel, many = runs
    figures[f"run_inputs_per_s {settings.workers}/0 workers"] = _ratio(
        parallel["inputs_per_s"], serial["inputs_per_s"])
    figures[f"run_peak_rss {many['inputs']}/{parallel['inputs']} inputs"] = _ratio(
        many["peak_rss_mb"], parallel["peak_rss_mb"])
    return figures


def _ratio(figure: float | None, baseline: float | None) -> float | None:
    """figure / baseline; None when either is unknown (all results of a run in one batch)."""
    return None if figure is None or baseline is None else figure / baseline


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}×"


def summary(sizes: list[dict], runs: list[dict], settings: Settings) -> list[str]:
    """The ratios and the loader-versus-step comparison in words, one line each."""
    figures = ratios(sizes, runs, settings)
    lines = []
    for row in sizes[1:]:
        pair = f"{row['size']}/{sizes[0]['size']}"
        lines += [
            f"training peak RSS {pair} = {_times(figures[f'train_peak_rss {pair}'])} "
            f"(target ≤ {TARGET_RSS_RATIO}×)",
            f"time to the first step {pair} = {_times(figures[f'first_step {pair}'])} "
            f"(target ≤ {TARGET_FIRST_STEP_RATIO:g}×)",
            f"steady steps/s {pair} = {_times(figures[f'steps_per_s {pair}'])}",
        ]
    for row in sizes:
        loader, needed = row["loader_n_images_per_s"], row["step_images_per_s"]
        verdict = "keeps up" if loader >= needed else "falls behind"
        lines.append(
            f"{row['size']} pairs: the loader with {settings.workers} workers reads "
            f"{loader:.0f} img/s ({row['loader_n_cached_images_per_s']:.0f} from the cache); "
            f"training at {row['steps_per_s']:.2f} steps/s × {settings.batch_size} takes "
            f"{needed:.0f} img/s: it {verdict}")
    _, parallel, many = runs
    speed_up = figures[f"run_inputs_per_s {settings.workers}/0 workers"]
    memory = figures[f"run_peak_rss {many['inputs']}/{parallel['inputs']} inputs"]
    lines += [
        f"m3fm run inputs/s {settings.workers}/0 workers = {_times(speed_up)}",
        f"m3fm run peak RSS {many['inputs']}/{parallel['inputs']} inputs = {_times(memory)}",
    ]
    return lines


def size_table(sizes: list[dict], workers: int) -> str:
    """One row per corpus size."""
    columns = [
        ("pairs", "size", "{:d}"), ("write s", "write_s", "{:.1f}"),
        ("corpus MB", "corpus_mb", "{:.0f}"), ("first step s", "first_step_s", "{:.1f}"),
        ("steps/s", "steps_per_s", "{:.2f}"), ("step needs img/s", "step_images_per_s", "{:.0f}"),
        ("loader 0w img/s", "loader_0_images_per_s", "{:.0f}"),
        (f"loader {workers}w img/s", "loader_n_images_per_s", "{:.0f}"),
        (f"loader {workers}w cached img/s", "loader_n_cached_images_per_s", "{:.0f}"),
        ("train peak RSS MB", "train_peak_rss_mb", "{:.0f}"), ("cache MB", "cache_mb", "{:.1f}"),
    ]
    return _table(sizes, columns)


def run_table(runs: list[dict]) -> str:
    """One row per `m3fm run` command."""
    columns = [("inputs", "inputs", "{:d}"), ("workers", "workers", "{:d}"),
               ("wall s", "wall_s", "{:.1f}"), ("first result s", "first_result_s", "{:.1f}"),
               ("inputs/s after it", "inputs_per_s", "{:.1f}"),
               ("peak RSS MB", "peak_rss_mb", "{:.0f}")]
    return _table(runs, columns)


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    cells = [["n/a" if row[key] is None else form.format(row[key])
              for _, key, form in columns] for row in rows]
    return tabulate(cells, headers=[title for title, _, _ in columns], tablefmt="github")


def render_markdown(results: dict) -> str:
    """The figures for people: the command, both tables and the ratios."""
    meta = results["meta"]
    return "\n".join([
        f"{meta['hardware']} · m3fm {meta['m3fm_version']} "
        f"(commit `{meta['git_commit'] or 'unknown'}`) · {meta['date']}", "",
        f"Reproduce with `{meta['command']}`.", "",
        f"## Corpus sizes ({SIDE} px synthetic {meta['settings']['modality']} PNGs)", "",
        size_table(results["sizes"], meta["settings"]["workers"]), "",
        "## m3fm run", "",
        run_table(results["run"]), "",
        "## Ratios", "",
        *(f"- {line}" for line in results["summary"]),
    ]) + "\n"


def measure(settings: Settings, work: Path) -> dict:
    """Every figure, as the JSON that ``--out`` writes."""
    sizes = [measure_size(size, work / f"size-{size}", settings) for size in settings.sizes]
    largest = work / f"size-{max(settings.sizes)}"
    runs = measure_run(largest / "corpus", largest, settings)
    return {
        "meta": {"command": settings.command(), "settings": asdict(settings),
                 "m3fm_version": __version__, "git_commit": provenance()["git_commit"],
                 "hardware": hardware(), "date": time.strftime("%Y-%m-%d")},
        "sizes": sizes, "run": runs,
        "ratios": ratios(sizes, runs, settings), "summary": summary(sizes, runs, settings),
    }


def _sizes(context, parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted(int(part) for part in value.split(",")))
    except ValueError:
        raise click.BadParameter(f"expected sizes like 2000,20000, got {value!r}") from None
    if sizes[0] < 1:
        raise click.BadParameter("sizes must be positive")
    return sizes


@click.command()
@click.option("--sizes", default="2000,20000", show_default=True, callback=_sizes,
              help="Corpus sizes (image–report pairs), comma-separated.")
@click.option("--modality", type=click.Choice(["cxr", "ct"]), default="cxr", show_default=True)
@click.option("--steps", type=click.IntRange(min=5), default=30, show_default=True,
              help="Training steps per size.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Data workers of the N-worker measurements.")
@click.option("--loader-images", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Images the loader alone reads per measurement.")
@click.option("--run-inputs", type=click.IntRange(min=1), default=128, show_default=True,
              help=f"Inputs of `m3fm run`; its memory is also measured on {RUN_FACTOR}× more. "
              "Its inputs/s count the results after the first batch (64 inputs for the bundled "
              "model), so give more than one batch.")
@click.option("--backbone", default="resnet10t", show_default=True)
@click.option("--input-size", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic corpora.")
@click.option("--work", type=click.Path(path_type=Path, file_okay=False),
              help="Keep corpora, runs and logs here; default: a temporary folder, deleted "
              "unless a step fails.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Write results.json and results.md into this folder.")
def main(work: Path | None, out: Path | None, **options) -> None:
    """Measure training, the loader and `m3fm run` on synthetic corpora of several sizes."""
    settings = Settings(**options)
    if settings.run_inputs * RUN_FACTOR > max(settings.sizes):
        raise click.UsageError(f"--run-inputs {settings.run_inputs} needs a corpus of at "
                               f"least {settings.run_inputs * RUN_FACTOR} pairs in --sizes")
    if settings.sizes[0] < 2 * settings.batch_size:
        raise click.UsageError("the smallest size must hold at least two batches")
    if work is not None and work.exists() and any(work.iterdir()):
        raise click.UsageError(f"--work {work} is not empty; give a new or empty folder")
    scratch = work is None
    if scratch:
        work = Path(tempfile.mkdtemp(prefix="m3fm-scale-"))
    results = measure(settings, work)  # a failure keeps `work`: its message names a log there
    if scratch:
        shutil.rmtree(work)
    click.echo(render_markdown(results))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
        atomic_write_text(out / "results.md", render_markdown(results))
        click.echo(f"figures in {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
