"""Dynamic batching: concurrent requests that ask for the same work share one model call.

A model decodes a batch of inputs in little more time than one, so a service that ran each
request alone would waste most of its throughput under load.  :class:`Batcher` gathers
requests with equal keys (the same modality, language, labels and options) until it holds
``max_batch`` of them or the oldest has waited ``max_wait_s``, then hands them to `run` on
the single worker thread it is given.  While that thread is busy, new requests queue, so the
next batch is as full as the load allows; the event loop never waits for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

Runner = Callable[[Any, Sequence[Item]], Sequence[Result]]
"""``run(key, items)``: one result per item, in the order of `items`."""


@dataclass
class _Job(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    since: float


@dataclass
class _Group(Generic[Item, Result]):
    key: Any
    jobs: list[_Job[Item, Result]] = field(default_factory=list)


class Batcher(Generic[Item, Result]):
    """Runs ``run(key, items)`` on `worker` for batches of submitted items with equal keys.

    Keys are compared with ``==`` (they need not be hashable); batches are served oldest
    first.  If a batch of several items raises, each item is run again alone, so that one bad
    item fails only its own request.  Use it inside a running event loop, between
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, run: Runner, worker: Executor, *, max_batch: int,
                 max_wait_s: float) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_s not negative")
        self.run, self.worker = run, worker
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._groups: list[_Group[Item, Result]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Stop taking batches; requests still waiting fail with CancelledError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for group in self._groups:
            for job in group.jobs:
                job.future.cancel()
        self._groups.clear()

    async def submit(self, key: Any, item: Item) -> Result:
        """The result of `item`, once the batch it joined has run; what `run` raised for it
        otherwise."""
        loop = asyncio.get_running_loop()
        job = _Job(item, loop.create_future(), loop.time())
        group = next((group for group in self._groups if group.key == key), None)
        if group is None:
            group = _Group(key)
            self._groups.append(group)
        group.jobs.append(job)
        self._arrived.set()
        return await job.future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._groups:
                self._arrived.clear()
                await self._arrived.wait()
            group = self._groups[0]
            deadline = group.jobs[0].since + self.max_wait_s
            while len(group.jobs) < self.max_batch and (delay := deadline - loop.time()) > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), delay)
            batch = group.jobs[:self.max_batch]
            del group.jobs[:self.max_batch]
            if not group.jobs:
                self._groups.remove(group)
            live = [job for job in batch if not job.future.done()]  # a client that left
            if live:
                await self._run(loop, group.key, live)

    async def _run(self, loop: asyncio.AbstractEventLoop, key: Any,
                   jobs: list[_Job[Item, Result]]) -> None:
        try:
            results = await loop.run_in_executor(self.worker, self.run, key,
                                                 [job.item for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"the runner gave {len(results)} results for "
                                   f"{len(jobs)} inputs")
        except asyncio.CancelledError:
            for job in jobs:
                job.future.cancel()
            raise
        except Exception as error:
            if len(jobs) == 1:
                _settle(jobs[0].future, error=error)
            else:
                for job in jobs:
                    await self._run(loop, key, [job])
            return
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result=result)


def _settle(future: asyncio.Future, *, result: Any = None,
            error: BaseException | None = None) -> None:
    """Give `future` its outcome, unless its request was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
