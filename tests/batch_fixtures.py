"""What the batch-inference tests share: small pictures, the bundled model with small batches
(so results arrive a few at a time), and `m3fm` as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m3fm.cli import main
from m3fm.models import default_model_dir

BATCH = 3
"""Inputs decoded together by :func:`small_batch_model`."""

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
"""Two processes on two cores: one thread each."""


def pictures(folder: Path, count: int) -> list[Path]:
    """`count` different 48x48 grey PNGs in `folder`, in listing order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = np.random.default_rng(index).random((48, 48)) * 255
        path = folder / f"img{index:02d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path, format="PNG")
        paths.append(path)
    return paths


def small_batch_model(folder: Path) -> Path:
    """The bundled report model, copied to `folder`, decoding :data:`BATCH` inputs at a time
    and short reports (fast)."""
    shutil.copytree(default_model_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["decode"] |= {"batch_size": BATCH, "max_new_tokens": 24}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def m3fm(*args: str) -> list[str]:
    """The command line of `m3fm ARGS` in a fresh Python process."""
    return [sys.executable, "-m", "m3fm.cli", *args]


def torchrun(*args: str, ranks: int = 2) -> list[str]:
    """The command line of `m3fm ARGS` as `ranks` torchrun processes."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
            "--standalone", "-m", "m3fm.cli", *args]


def inputs_of(text: str) -> list[str]:
    """The ``input`` of each JSON line in `text`."""
    return [json.loads(line)["input"] for line in text.splitlines()]


def run_args(model: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    """`m3fm run` of `model` on the folder `inputs`, reports and diagnosis, into `out`."""
    return ["run", "--plugin", "ct", "--checkpoint", str(model), "--out", str(out),
            *extra, str(inputs)]


def reference_results(model: Path, inputs: Path, out: Path) -> bytes:
    """The results file of one uninterrupted process, run in this one."""
    with pytest.raises(SystemExit) as exit_info:
        main(run_args(model, inputs, out))
    assert exit_info.value.code == 0
    return out.read_bytes()
