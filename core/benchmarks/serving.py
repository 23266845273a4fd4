"""What dynamic batching buys `m3fm serve` under concurrent load.

Starts ``m3fm serve`` on a free localhost port, then posts the same ``--requests`` images to
``POST /v1/run`` twice: one request at a time, then from ``--clients`` concurrent clients.
It prints the throughput and the median and 95th-percentile latency of both and their
throughput ratio, and checks that every request got an answer for its own file: each answer
names the file sent, and its report and label probabilities are those the file got alone::

    python -m m3fm.benchmarks.serving                       # 8 clients, 32 requests, ct
    python -m m3fm.benchmarks.serving --clients 16 --requests 64 --json

The images are CT slices of ``$M3FM_DATA/cov-ctr`` when present (or ``--images DIR``), else
synthetic PNGs (:mod:`m3fm.benchmarks.synthetic`).  The client is the standard library's,
so the figures need nothing beyond m3fm itself.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from m3fm.benchmarks.synthetic import write_corpus
from m3fm.registry import get_registry

START_TIMEOUT_S = 300
"""How long the service may take to load its model."""

PROBABILITY_TOLERANCE = 1e-3
"""Label probabilities of a file in a batch and alone differ by float rounding at most."""


def benchmark_images(count: int, modality: str, folder: Path | None, scratch: Path
                     ) -> tuple[list[Path], str]:
    """`count` image files and where they come from: the first of `folder`, else of
    ``$M3FM_DATA/cov-ctr``, that `modality` reads (repeated when fewer), else synthetic PNGs
    written to `scratch`."""
    data = os.environ.get("M3FM_DATA")
    folder = folder or (Path(data) / "cov-ctr" if data else None)
    if folder is not None and folder.is_dir():
        spec = get_registry().modality(modality)
        found = sorted(p for p in folder.rglob("*") if p.is_file() and spec.accepts(p))
        if found:
            return [found[index % len(found)] for index in range(count)], str(folder)
    write_corpus(scratch, count)
    return sorted((scratch / "images").glob("*.png")), "synthetic"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multipart(fields: dict[str, str], name: str, content: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with `fields` and one file, and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
             .encode() for key, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_run(url: str, path: Path, name: str, modality: str) -> tuple[float, int, dict]:
    """(seconds, HTTP status, JSON answer) of ``POST /v1/run`` with `path` sent as `name`."""
    body, content_type = _multipart({"plugin": modality}, name, path.read_bytes())
    request = urllib.request.Request(f"{url}/v1/run", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=START_TIMEOUT_S) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return time.perf_counter() - start, status, json.loads(text)


def _wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise click.ClickException(f"m3fm serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise click.ClickException(f"m3fm serve did not answer within {START_TIMEOUT_S} s")


def _cpu_seconds(pid: int) -> float | None:
    """CPU time process `pid` has used (user and system), where /proc tells (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(images: list[Path], url: str, modality: str, clients: int, server: int) -> dict:
    """The figures of posting every image, `clients` at a time, with the answers (the
    ``answers`` key); each request names its file ``NNNN-<name>`` so that an answer shows
    which request it is for.  The service's CPU time per request does not depend on what
    else the machine runs, unlike the wall-clock figures."""
    names = [f"{index:04d}-{path.name}" for index, path in enumerate(images)]
    cpu = _cpu_seconds(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda pair: post_run(url, *pair, modality),
                                zip(images, names, strict=True)))
    wall = time.perf_counter() - start
    used = _cpu_seconds(server)
    latencies = sorted(seconds for seconds, _, _ in answers)
    return {"seconds": round(wall, 2), "requests_per_s": round(len(answers) / wall, 3),
            "p50_s": round(_percentile(latencies, 50), 3),
            "p95_s": round(_percentile(latencies, 95), 3),
            "server_cpu_s_per_request": None if cpu is None or used is None
            else round((used - cpu) / len(answers), 3),
            "answers": answers}


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _mismatches(alone: list[tuple[float, int, dict]], together: list[tuple[float, int, dict]],
                images: list[Path]) -> list[str]:
    """Why an answer is not that of its own file: a failure, another file's name, or another
    result than the file got alone."""
    problems = []
    for index, (path, (_, status, single), (_, shared_status, shared)) in enumerate(
            zip(images, alone, together, strict=True)):
        name = f"{index:04d}-{path.name}"
        if status != 200 or shared_status != 200:
            problems.append(f"{name}: HTTP {status} alone, {shared_status} concurrently")
        elif shared["input"] != name or single["input"] != name:
            problems.append(f"{name}: answered as {shared['input']!r}")
        elif shared.get("report") != single.get("report") or any(
                abs(p - single["diagnosis"][label]) > PROBABILITY_TOLERANCE
                for label, p in shared.get("diagnosis", {}).items()):
            problems.append(f"{name}: another result concurrently than alone")
    return problems


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Report model; default: the bundled m3fm-small.")
@click.option("--plugin", "modality", default="ct", show_default=True)
@click.option("--clients", default=8, show_default=True, type=click.IntRange(min=1),
              help="Concurrent clients of the second round.")
@click.option("--requests", "count", default=32, show_default=True, type=click.IntRange(min=1),
              help="Requests of each round.")
@click.option("--images", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Post the images of this folder; default: $M3FM_DATA/cov-ctr, else "
              "synthetic PNGs.")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="`m3fm serve --max-batch`; default: the model's decode.batch_size.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0),
              help="`m3fm serve --max-wait-ms`; default: the service's.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch CPU threads of the service (OMP_NUM_THREADS); default: torch's "
              "choice. On a machine busy with other work, 1 avoids threads waiting for cores.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(checkpoint: Path | None, modality: str, clients: int, count: int,
         images: Path | None, max_batch: int | None, max_wait_ms: float | None,
         threads: int | None, as_json: bool) -> None:
    """Time `m3fm serve` with one client, then with --clients concurrent clients."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    options = [("--checkpoint", checkpoint), ("--max-batch", max_batch),
               ("--max-wait-ms", max_wait_ms)]
    command = [sys.executable, "-m", "m3fm.cli", "serve", "--port", str(port),
               *(str(part) for option, value in options if value is not None
                 for part in (option, value))]
    with tempfile.TemporaryDirectory() as scratch:
        files, source = benchmark_images(count, modality, images, Path(scratch))
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            _wait_until_up(url, server)
            post_run(url, files[0], "warm-up", modality)  # lazy imports, allocator
            alone = _round(files, url, modality, 1, server.pid)
            together = _round(files, url, modality, clients, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
    answers = together.pop("answers")
    problems = _mismatches(alone.pop("answers"), answers, files)
    figures = {
        "requests": count, "clients": clients, "plugin": modality, "threads": threads,
        "images": source,
        "sequential": alone,
        "concurrent": together,
        "speedup": round(together["requests_per_s"] / alone["requests_per_s"], 2),
        "answered": sum(status == 200 for _, status, _ in answers),
        "mismatches": problems,
    }
    if as_json:
        click.echo(json.dumps(figures))
    else:
        click.echo(f"{count} requests of {modality} images ({figures['images']})")
        for label, key in (("1 client", "sequential"), (f"{clients} clients", "concurrent")):
            shown = figures[key]
            cpu = shown["server_cpu_s_per_request"]
            click.echo(f"{label:>11}: {shown['requests_per_s']:.2f} req/s, "
                       f"p50 {shown['p50_s']:.2f} s, p95 {shown['p95_s']:.2f} s"
                       + ("" if cpu is None else f", service CPU {cpu:.2f} s per request"))
        click.echo(f"concurrent/sequential throughput: {figures['speedup']:.2f}x; "
                   f"{figures['answered']}/{count} answered, {len(problems)} mismatched")
        for problem in problems:
            click.echo(f"  {problem}", err=True)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
