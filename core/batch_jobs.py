"""A results file that outlives its run: resumed after a kill, written by several torchrun ranks.

`m3fm run --out FILE` over an archive can take days.  :class:`ResultsJob` lets it

* **resume**: the inputs already answered in FILE (a result or an error line) are skipped and
  the others appended, after cutting off a line torn by a kill;
* **shard**: under torchrun (``WORLD_SIZE > 1``) rank R takes every WORLD_SIZE-th input not yet
  answered, writes ``.FILE.rank-R-of-W.jsonl`` beside FILE (JSON Lines like FILE itself), and
  at the end rank 0 merges those part files and FILE, in listing order, into FILE atomically.

A killed sharded run leaves its part files; ``--resume`` counts their lines as answered and
merges them too, so only unfinished inputs are computed again.  Ranks meet only at a few
``gloo`` barriers (the torchrun rendezvous is already there; a file-based wait would need its
own timeouts and stale-file rules), and torchrun stops them all when one fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from m3fm.outputs import ResultsFile, check_output_path, shown_path, write_failure
from m3fm.registry import M3fmError, UsageError

BARRIER_TIMEOUT = timedelta(hours=24)
"""How long a rank waits for the slowest one at the end; torchrun stops the group earlier when
a rank fails, so this only bounds a rank that hangs."""


class ResumeError(M3fmError):
    """``--resume`` found a line in the results file (or in a rank's part file beside it)
    that is not a result of ``m3fm run``, so it cannot tell which inputs are answered.

    Fix: delete that line (its input is then run again) or give another ``--out``; run
    without ``--resume`` to start over.
    """


@dataclass(frozen=True)
class Shard:
    """This process's place among the torchrun ranks: rank `rank` of `size` (0 of 1 alone)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """The shard torchrun describes in ``WORLD_SIZE`` and ``RANK``."""
        world_size, rank_text = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
        try:
            size, rank = int(world_size), int(rank_text)
        except ValueError:
            raise UsageError(f"WORLD_SIZE={world_size!r}, RANK={rank_text!r}: not whole "
                             "numbers; start sharded runs with torchrun") from None
        if size < 1 or not 0 <= rank < size:
            raise UsageError(f"RANK={rank} of WORLD_SIZE={size} is no rank; start sharded runs "
                             "with torchrun")
        return cls(rank, size)

    def takes(self, index: int) -> bool:
        return index % self.size == self.rank

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def total(self, *counts: int) -> tuple[int, ...]:
        """`counts` summed over all ranks (a barrier too)."""
        if self.size == 1:
            return counts
        import torch
        import torch.distributed as dist

        summed = torch.tensor(counts, dtype=torch.int64)
        dist.all_reduce(summed)
        return tuple(summed.tolist())


@contextlib.contextmanager
def joined(shard: Shard) -> Iterator[Shard]:
    """Join the other ranks (gloo) for the block; each rank uses its own GPU when there are
    GPUs."""
    if shard.size == 1:
        yield shard
        return
    import torch
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.size,
                                timeout=BARRIER_TIMEOUT)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"WORLD_SIZE={shard.size} but the ranks cannot meet ("
                         f"{' '.join(str(exc).split())}); start sharded runs with "
                         "torchrun") from None
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        yield shard
    finally:
        dist.destroy_process_group()


def part_path(out: Path, shard: Shard) -> Path:
    """Where rank `shard.rank` writes its results until they are merged into `out`."""
    return out.with_name(f".{out.name}.rank-{shard.rank}-of-{shard.size}.jsonl")


def part_files(out: Path) -> list[Path]:
    """The part files beside `out`, of any number of ranks (a killed run's included)."""
    pattern = f".{glob.escape(out.name)}.rank-*-of-*.jsonl"
    return sorted(out.parent.glob(pattern))


def complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each newline-terminated line of `path` (none when it is missing): a
    last line without its newline was torn by a kill and does not count."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
        offset = 0
        for line in file:
            if not line.endswith(b"\n"):
                return
            yield offset, line
            offset += len(line)


def result_input(path: Path, number: int, line: bytes) -> str:
    """The ``input`` of a results line, exactly as results name it (PEP 383 escapes kept)."""
    try:
        answered = json.loads(line)["input"]
        if isinstance(answered, str):
            return answered
    except (ValueError, TypeError, KeyError):
        pass
    raise ResumeError(f"{shown_path(path)} line {number} is not a result of m3fm run; delete "
                      "it or run without --resume")


def answered_inputs(paths: Iterable[Path]) -> set[str]:
    """The inputs with a result or an error line in any of `paths`."""
    return {result_input(path, number, line) for path in paths
            for number, (_, line) in enumerate(complete_lines(path), start=1)}


def merge_results(out: Path, sources: list[Path], listing: Iterable[Path]) -> None:
    """Replace `out`, atomically, with the complete lines of `sources` in the order of
    `listing`; lines of inputs no longer listed follow, as they were.  Only an index of the
    lines is held, not their text."""
    position = {str(path): index for index, path in enumerate(listing)}
    index = [(position.get(result_input(source, number, line), len(position)), which, offset,
              len(line))
             for which, source in enumerate(sources)
             for number, (offset, line) in enumerate(complete_lines(source), start=1)]
    index.sort(key=lambda entry: entry[0])  # stable: unlisted inputs keep their order
    partial = out.with_name(f".{out.name}.partial")
    try:
        with contextlib.ExitStack() as stack:
            readers = [stack.enter_context(source.open("rb")) for source in sources]
            with partial.open("wb") as merged:
                for _, which, offset, length in index:
                    readers[which].seek(offset)
                    merged.write(readers[which].read(length))
                merged.flush()
                os.fsync(merged.fileno())
        os.replace(partial, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise write_failure(error, out, 0) from None


class ResultsJob:
    """Where one process of `m3fm run` puts its results, and which inputs it still owes.

    Opened before the model loads (a busy or bad ``--out`` fails at once); :meth:`start` once
    it is loaded; :meth:`pending` filters the listing; :meth:`finish` merges.  Without an
    output file only sharding applies: each rank prints its own share.
    """

    def __init__(self, out: Path | None, resume: bool, shard: Shard) -> None:
        if resume and out is None:
            raise UsageError("--resume needs --out FILE: the results file that says which "
                             "inputs are answered")
        self.out, self.resume, self.shard = out, resume, shard
        self.answered: Container[str] = frozenset()
        self.sink: ResultsFile | None = None
        self._stack = contextlib.ExitStack()
        self._file: ResultsFile | None = None
        if out is None:
            return
        if shard.rank == 0:  # FILE is held by one process: rank 0 merges into it at the end
            self._file = self._stack.enter_context(ResultsFile(out, resume=resume))
            if not resume:
                for part in part_files(out):  # a killed run's, not to be merged into this one
                    part.unlink(missing_ok=True)
        else:
            check_output_path(out)

    def start(self) -> None:
        """Read what is answered and open this rank's output; all ranks read before any
        writes, so that they agree on which inputs are left."""
        if self.out is None:
            return
        if self.resume:
            self.answered = answered_inputs([self.out, *part_files(self.out)])
        if self.shard.size == 1:
            self.sink = self._file
            return
        if self._file is not None and not self.resume:
            self._file.empty()  # a killed run's FILE must not look answered to --resume
        self.shard.barrier()
        self.sink = self._stack.enter_context(
            ResultsFile(part_path(self.out, self.shard), resume=self.resume))

    def pending(self, inputs: Iterable[Path]) -> Iterator[Path]:
        """This rank's share of the inputs not yet answered, in listing order."""
        remaining = (path for path in inputs if str(path) not in self.answered)
        return (path for index, path in enumerate(remaining) if self.shard.takes(index))

    def finish(self, listing: Callable[[], Iterable[Path]]) -> None:
        """Rank 0 merges the part files (this run's and a killed run's) into FILE in the
        order of a fresh `listing`; the other ranks wait, so that none exits during it."""
        if self.out is None:
            return
        if self.sink is not self._file:
            self.sink.close()
        self.shard.barrier()
        if self._file is not None:
            parts = part_files(self.out)
            if parts:
                merge_results(self.out, [self.out, *parts], listing())
                for part in parts:
                    part.unlink()
        self.shard.barrier()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ResultsJob:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
