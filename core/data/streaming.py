"""Images preprocessed ahead of their use, in DataLoader worker processes, in input order.

Inference over an archive, validation during training and ``m3fm data cache`` all read many
files one after another; :func:`preprocessed` reads them in ``workers`` processes while the
caller computes, holds only a bounded number ahead (``prefetch`` per worker) and takes the
paths lazily, so a listing of 10^5 files costs nothing before the first result.

A file that fails is an :class:`~m3fm.registry.InputError` result in its place, never the end
of the stream.  A worker process that dies (a decoder that segfaults, the kernel's OOM killer)
takes its in-flight files with it; each of them is then read again alone in a fresh worker, and
the one that kills that worker too becomes an error result, so one poisonous file costs one
input, not the run.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

from m3fm.registry import InputError, M3fmError, ModalitySpec

if TYPE_CHECKING:
    from m3fm.data.cache import PreprocessCache

log = logging.getLogger(__name__)

Loaded = tuple[Path, "torch.Tensor | M3fmError"]

PREFETCH = 2
"""Files each worker reads ahead of the consumer: enough to hide a slow file, little memory."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_workers(workers: int) -> int:
    """`workers`, with a warning when they outnumber the usable cores: the extra processes
    then only compete with the one that computes, and make it slower."""
    cores = usable_cores()
    if workers > cores:
        warnings.warn(
            f"{workers} data workers on {cores} usable cores: they compete with the model for"
            f" the CPU; use at most {cores} (fewer when the model runs on the CPU too)",
            stacklevel=2,
        )
    return workers


def worker_died(exc: RuntimeError) -> bool:
    """Whether `exc` is DataLoader's report of a worker process that died (a crash, a kill),
    which takes the loader down with it, rather than an error of the code it ran."""
    return "exited unexpectedly" in str(exc)


def load_image(spec: ModalitySpec, path: Path, cache: PreprocessCache | None) -> torch.Tensor:
    """One input preprocessed through `spec`, through `cache` when given; raises InputError."""
    from m3fm.imaging import preprocess  # MONAI and timm: only once an image is read

    return cache.load(spec, path) if cache is not None else preprocess(spec, path)


class _Preprocessing(Dataset):
    """Maps a path to (path, tensor or error) inside a worker; never raises on a bad file."""

    def __init__(self, spec: ModalitySpec, cache: PreprocessCache | None) -> None:
        self.spec, self.cache = spec, cache

    def __getitem__(self, path: Path) -> Loaded:  # type: ignore[override]
        try:
            return path, load_image(self.spec, path, self.cache)
        except M3fmError as exc:  # in practice an InputError: preprocess raises no other
            return path, exc


def _unchanged(item: Loaded) -> Loaded:
    return item


class _Dispatched:
    """The paths as the loader takes them, remembering those not yet given back."""

    def __init__(self, paths: Iterator[Path]) -> None:
        self.paths, self.pending = paths, deque()

    def __iter__(self) -> Iterator[Path]:
        for path in self.paths:
            self.pending.append(path)
            yield path


def preprocessed(
    spec: ModalitySpec, paths: Iterable[Path], *, workers: int = 0,
    cache: PreprocessCache | None = None, prefetch: int = PREFETCH,
) -> Iterator[Loaded]:
    """``(path, tensor)`` or ``(path, error)`` per path, in the order of `paths`.

    With ``workers == 0`` each file is read in this process when the caller asks for it;
    otherwise ``workers`` forked processes read up to ``prefetch`` files each ahead.
    """
    dataset = _Preprocessing(spec, cache)
    if workers == 0:
        for path in paths:
            yield dataset[Path(path)]
        return
    remaining = (Path(path) for path in paths)
    while True:
        dispatched = _Dispatched(remaining)
        try:
            for item in _loader(dataset, dispatched, workers, prefetch):
                dispatched.pending.popleft()
                yield item
            return
        except RuntimeError as exc:
            if not worker_died(exc):
                raise
            log.warning("a data worker died: %s; reading its files again one by one",
                        " ".join(str(exc).split()))
            for path in list(dispatched.pending):
                yield _alone(dataset, path)
            remaining = dispatched.paths


def _loader(dataset: _Preprocessing, paths: Iterable[Path], workers: int,
            prefetch: int) -> DataLoader:
    # fork: the worker inherits the registry and the spec's closures, which need no pickling;
    # a generator of its own: seeding workers must not draw from the caller's global RNG
    return DataLoader(dataset, sampler=paths, batch_size=None, num_workers=workers,
                      prefetch_factor=prefetch, collate_fn=_unchanged,
                      multiprocessing_context="fork", generator=torch.Generator())


def _alone(dataset: _Preprocessing, path: Path) -> Loaded:
    """`path` read in a fresh worker of its own: an error result if that worker dies too."""
    try:
        return next(iter(_loader(dataset, [path], 1, 1)))
    except RuntimeError as exc:
        if not worker_died(exc):
            raise
        return path, InputError(f"{path}: the process reading it died; the file crashes its "
                                "decoder or exhausts the memory")
