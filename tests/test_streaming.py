"""Images preprocessed ahead in worker processes: order, errors, dead workers, laziness."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from m3fm.data.streaming import check_workers, preprocessed, usable_cores
from m3fm.imaging import preprocess
from m3fm.registry import InputError, get_registry


@pytest.fixture
def pictures(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(8):
        path = tmp_path / f"{index:02d}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_results_come_in_input_order_with_errors_in_place(pictures, tmp_path, workers):
    spec = get_registry().modality("cxr")
    missing = tmp_path / "missing.png"
    paths = [*pictures[:3], missing, *pictures[3:]]
    results = list(preprocessed(spec, iter(paths), workers=workers))
    assert [path for path, _ in results] == paths
    assert isinstance(results[3][1], InputError) and "no such file" in str(results[3][1])
    for path, tensor in results[:3] + results[4:]:
        assert torch.equal(tensor, preprocess(spec, path))


def test_a_file_that_kills_its_worker_fails_alone(pictures):
    spec = get_registry().modality("cxr")
    real = spec.load

    def segfault_on_third(path: Path):
        if path == pictures[2]:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path)

    crashing = spec.model_copy(update={"load": segfault_on_third})
    results = list(preprocessed(crashing, pictures, workers=2))
    assert [path for path, _ in results] == pictures
    assert isinstance(results[2][1], InputError)
    assert "the process reading it died" in str(results[2][1])
    assert all(isinstance(tensor, torch.Tensor) for _, tensor in results[:2] + results[3:])


def test_paths_are_taken_lazily(pictures):
    """An endless listing still gives its first results: only a few paths are taken ahead."""
    spec = get_registry().modality("cxr")
    taken = []

    def endless():
        for path in itertools.cycle(pictures):
            taken.append(path)
            yield path

    first = list(itertools.islice(preprocessed(spec, endless(), workers=1, prefetch=2), 3))
    assert len(first) == 3 and len(taken) <= 3 + 2 + 1


def test_more_workers_than_cores_is_warned_about():
    with pytest.warns(UserWarning, match="usable cores"):
        assert check_workers(usable_cores() + 1) == usable_cores() + 1
