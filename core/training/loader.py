"""An epoch's batches built ahead of the step that needs them, in DataLoader worker processes.

A task plans each epoch (a function of seed and epoch: which examples form step i) and says
how to turn one step's plan into tensors.  :class:`PlannedLoader` runs that ``load`` in
``workers`` persistent processes, a few steps ahead of training, while the step itself runs
in the main process; the plan is the loader's sampler, so batches arrive in plan order and a
resumed run starts at the step it stopped at.  ``load`` gets the step's place
``(epoch, index)`` and must seed all its randomness from it (never from the worker), which is
what makes the batches, and so a resumed run, the same with 0 workers or 8.

``finish`` runs in the main process on what ``load`` returned: cheap work that needs its
state (tokenising, counting skipped files).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from m3fm.data.streaming import check_workers, worker_died

log = logging.getLogger(__name__)

Plan = TypeVar("Plan")
Part = TypeVar("Part")
Batch = TypeVar("Batch")
Place = tuple[int, int]


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are built: in how many worker processes, how far ahead."""

    workers: int = 0
    """Worker processes; 0 builds each batch in the training process when it is needed."""
    prefetch: int = 2
    """Batches each worker builds ahead of the step."""


class _Steps(Dataset):
    """A step's (plan, place) to what `load` makes of it, inside a worker."""

    def __init__(self, load: Callable[[Any, Place], Any]) -> None:
        self.load = load

    def __getitem__(self, key: tuple[Any, Place]) -> Any:  # type: ignore[override]
        plan, place = key
        return self.load(plan, place)


class _PlanSampler:
    """The steps of the current epoch from `start` on, as (plan, place) keys; the loader
    reads it anew (in the main process) each time it is iterated."""

    def __init__(self) -> None:
        self.plans: Sequence[Any] = ()
        self.epoch = self.start = 0

    def __iter__(self) -> Iterator[tuple[Any, Place]]:
        for index in range(self.start, len(self.plans)):
            yield self.plans[index], (self.epoch, index)


def _unchanged(part: Any) -> Any:
    return part


class PlannedLoader(Generic[Plan, Part, Batch]):
    """Turns an epoch's plans into batches: ``finish(plan, load(plan, place))``."""

    def __init__(self, load: Callable[[Plan, Place], Part],
                 finish: Callable[[Plan, Part], Batch], settings: LoaderSettings,
                 load_alone: Callable[[Plan, Place], Part] | None = None) -> None:
        """`load_alone` builds a step whose worker died, reading each of its files in a
        process of its own, so that the one file that kills its reader is skipped; without
        it, a dead worker ends the run."""
        self.load, self.finish, self.settings = load, finish, settings
        self.load_alone = load_alone
        self._sampler = _PlanSampler()
        self._loader: DataLoader | None = None
        if settings.workers:
            check_workers(settings.workers)
            self._loader = self._new_loader()

    def _new_loader(self) -> DataLoader:
        # fork: workers inherit the task (records, registry, plugin closures) unpickled;
        # persistent: started once, not once per epoch; a generator of its own: the loader
        # draws its workers' seeds from it, not from the global RNG that training uses
        return DataLoader(
            _Steps(self.load), sampler=self._sampler, batch_size=None,
            num_workers=self.settings.workers, prefetch_factor=self.settings.prefetch,
            persistent_workers=True, collate_fn=_unchanged, multiprocessing_context="fork",
            generator=torch.Generator(),
        )

    def epoch(self, plans: Sequence[Plan], epoch: int) -> PlannedBatches[Plan, Batch]:
        """The batches of `epoch`, whose steps are `plans`."""
        return PlannedBatches(self, plans, epoch)

    def _iterate(self, plans: Sequence[Plan], epoch: int, start: int) -> Iterator[Batch]:
        if self._loader is None:
            for index in range(start, len(plans)):
                yield self.finish(plans[index], self.load(plans[index], (epoch, index)))
            return
        index = start
        while index < len(plans):
            self._sampler.plans, self._sampler.epoch, self._sampler.start = plans, epoch, index
            try:
                for part in self._loader:
                    yield self.finish(plans[index], part)
                    index += 1
            except RuntimeError as exc:
                if not worker_died(exc) or self.load_alone is None:
                    raise
                log.warning("a data worker died building step %d of epoch %d (%s); building "
                            "that step again, each of its files read alone", index, epoch,
                            " ".join(str(exc).split()))
                self._loader = self._new_loader()  # the dead worker took the old one down
                yield self.finish(plans[index], self.load_alone(plans[index], (epoch, index)))
                index += 1


class PlannedBatches(Sequence[Batch], Generic[Plan, Batch]):
    """One epoch's batches: indexable (built on the spot) and iterable from any step (built
    ahead in the workers), which is how the training loop reads them."""

    def __init__(self, loader: PlannedLoader[Plan, Any, Batch], plans: Sequence[Plan],
                 epoch: int) -> None:
        self.loader, self.plans, self.epoch = loader, plans, epoch

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        plan = self.plans[index]
        return self.loader.finish(plan, self.loader.load(plan, (self.epoch, index)))

    def iterate(self, start: int = 0) -> Iterator[Batch]:
        """The batches from step `start` to the end of the epoch, in order."""
        return self.loader._iterate(self.plans, self.epoch, start)
