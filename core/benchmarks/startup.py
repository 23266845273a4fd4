"""What a person waits for before m3fm answers: start-up of the CLI's verbs, in fresh processes.

Each command runs `--repeats` times as its own process (the way a user or a pipeline calls it);
the median wall time and the peak resident memory of that process are printed, beside the
same machine's floor (``python -c pass``) and its cost of ``import torch``, and beside the
behaviour m3fm had before start-up was worked on, measured in the same run:

* ``version --cuda`` imports torch, as ``version`` did;
* ``plugins list --check`` runs the conformance kit, as every ``plugins list`` did;
* ``run`` with transformers' BART and timm imported first is what ``run`` on a picture cost
  while the model ran on transformers' and timm's networks (before :mod:`m3fm.lean`).

`m3fm run` is also broken down (imports, model load, preprocess, encode, decode) in one more
fresh process::

    python -m m3fm.benchmarks.startup                 # a synthetic CT slice
    python -m m3fm.benchmarks.startup --image slice.png --repeats 5 --json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

M3FM = [sys.executable, "-m", "m3fm.cli"]

BREAKDOWN = r"""
import json, sys, time
marks = {}
start = time.perf_counter()
from m3fm.analysis import Analysis, analyse_inputs
from m3fm.cli.models import load_model
from m3fm.imaging import preprocess
from m3fm.registry import get_registry
marks["imports"] = time.perf_counter() - start
start = time.perf_counter()
model = load_model(None, reports=True)
marks["model load"] = time.perf_counter() - start
start = time.perf_counter()
image = preprocess(get_registry().modality("ct"), sys.argv[1])
marks["preprocess"] = time.perf_counter() - start
import torch
with torch.inference_mode():
    start = time.perf_counter()
    embedding = model.embed_images([image], modality="ct")
    marks["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    model.reports_from_embeddings(embedding, "en", model.decode, modality="ct")
    marks["decode"] = time.perf_counter() - start
print(json.dumps(marks))
"""
"""Times the steps of `m3fm run` on one image with the bundled model, in a fresh process."""


def measure(command: list[str], repeats: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall seconds and peak RSS (MB) of `command` run `repeats` times, each fresh."""
    walls, peaks = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - started)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            error = process.stderr.read().decode(errors="replace").strip().splitlines()
            raise click.ClickException(f"{' '.join(command)} failed: "
                                       f"{error[-1] if error else process.returncode}")
        process.stderr.close()
        peaks.append(usage.ru_maxrss / 1024)  # kilobytes on Linux
    return {"wall_s": statistics.median(walls), "peak_rss_mb": max(peaks)}


def synthetic_slice(folder: Path) -> Path:
    """A 512² grey PNG with a round 'body' and two dark 'lungs': enough for the CT plugin."""
    import numpy as np
    from PIL import Image

    rows, columns = np.mgrid[:512, :512]
    body = ((rows - 256) ** 2 / 200**2 + (columns - 256) ** 2 / 230**2) < 1
    lungs = (((rows - 250) ** 2 / 120**2 + (columns - 170) ** 2 / 60**2) < 1) | (
        ((rows - 250) ** 2 / 120**2 + (columns - 342) ** 2 / 60**2) < 1)
    pixels = np.where(body, 170, 10) - np.where(lungs, 140, 0)
    path = folder / "slice.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@click.command()
@click.option("--image", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A CT slice picture for `m3fm run`; default: a synthetic one.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Fresh processes per command; the median is shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(image: Path | None, repeats: int, as_json: bool) -> None:
    """Time the CLI's start-up against the machine's floor and the earlier behaviour."""
    with tempfile.TemporaryDirectory(prefix="m3fm-startup-") as scratch:
        # A private cache folder: the first `plugins list` fills it, the measured ones reuse it
        env = os.environ | {"XDG_CACHE_HOME": scratch, "M3FM_CACHE": "off"}
        image = image or synthetic_slice(Path(scratch))
        run = ["run", "--plugin", "ct", str(image)]
        subprocess.run([*M3FM, "plugins", "list"], env=env, check=True, capture_output=True)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "import torch": ([sys.executable, "-c", "import torch"], None),
            "m3fm --help": ([*M3FM, "--help"], None),
            "m3fm version": ([*M3FM, "version"], "m3fm version --cuda"),
            "m3fm version --cuda": ([*M3FM, "version", "--cuda"], None),
            "m3fm plugins list": ([*M3FM, "plugins", "list"], "m3fm plugins list --check"),
            "m3fm plugins list --check": ([*M3FM, "plugins", "list", "--check"], None),
            "m3fm run (PNG)": ([*M3FM, *run], "m3fm run (PNG), transformers+timm"),
            "m3fm run (PNG), transformers+timm": (
                [sys.executable, "-c", "import transformers.models.bart.modeling_bart, timm; "
                 f"from m3fm.cli import main; main({run!r})"], None),
        }
        figures = {}
        for name, (command, _) in commands.items():
            click.echo(f"measuring {name}", err=True)
            figures[name] = measure(command, repeats, env)
        for name, (_, baseline) in commands.items():
            if baseline is not None:
                figures[name]["speed-up"] = (figures[baseline]["wall_s"]
                                             / figures[name]["wall_s"])
        breakdown = json.loads(subprocess.run(
            [sys.executable, "-c", BREAKDOWN, str(image)], env=env, check=True,
            capture_output=True, text=True).stdout)
    results = {"repeats": repeats, "cpus": os.cpu_count(), "figures": figures,
               "run_breakdown_s": breakdown}
    if as_json:
        click.echo(json.dumps(results, indent=1))
        return
    click.echo(f"median of {repeats} fresh processes, {os.cpu_count()} CPUs\n")
    click.echo(f"{'command':40} {'wall s':>8} {'peak MB':>8} {'vs before':>10}")
    for name, row in figures.items():
        ratio = f"{row['speed-up']:.2f}x" if "speed-up" in row else ""
        click.echo(f"{name:40} {row['wall_s']:8.2f} {row['peak_rss_mb']:8.0f} {ratio:>10}")
    click.echo("\nm3fm run, one image, in one fresh process:")
    for step, seconds in breakdown.items():
        click.echo(f"  {step:12} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
