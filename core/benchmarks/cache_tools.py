"""Why the preprocessing cache stores one safetensors file per image, measured against the tools
one could have used instead::

    python -m m3fm.benchmarks.cache_tools --count 500

On `--count` synthetic 224×224 float32 tensors (the size of a preprocessed slice), it times
writing them all, reading each back cold (its files evicted from the page cache with
``posix_fadvise`` first, where the system has it) and warm (again, from the page cache), the
best of `--repeat` read passes, and measures the disk space, for:

* m3fm's :class:`~m3fm.data.cache.PreprocessCache` (its key and its checked safetensors entry);
* MONAI's ``PersistentDataset`` (a ``torch.save`` ``.pt`` file per item);
* webdataset tar shards, if ``webdataset`` is installed (it is not a dependency of m3fm).

What the figures do not show, and decided the choice as much:

* ``PersistentDataset`` names an entry by a hash of the data dict, i.e. the path string: an
  image edited in place keeps its entry (neither its size nor its modification time is in the
  key), and a changed transform keeps it too unless ``hash_transform`` is given (and then only
  the transforms' pickled form counts, not the values their closures capture).  Its entries are
  torch pickles, so reading a cache folder someone else wrote can run their code (``torch.load``
  with ``weights_only`` narrows that, but the format stays pickle); it writes the temporary
  file in the system's temporary folder, so the final move crosses file systems and is a copy,
  not an atomic rename.
* webdataset stores samples in tar shards read sequentially: ideal for streaming from object
  storage, but m3fm's epoch plan needs random access to any image (shuffling, ranks taking
  their share, resuming mid-epoch) and invalidating one image when its file or its modality's
  preprocessing changes, which a tar shard can only do by being rewritten.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import torch

from m3fm.data.cache import PreprocessCache
from m3fm.registry import ModalitySpec

ITEM_SHAPE = (1, 224, 224)
CAN_EVICT = hasattr(os, "posix_fadvise")
SHARD_SIZE = 100
"""Samples per webdataset tar shard."""


def synthetic_tensors(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(ITEM_SHAPE, generator=generator) for _ in range(count)]


def source_files(folder: Path, count: int) -> list[Path]:
    """Small distinct files standing for the images: the m3fm key reads their size and mtime."""
    folder.mkdir(parents=True)
    paths = [folder / f"image-{index:05d}.png" for index in range(count)]
    for index, path in enumerate(paths):
        path.write_text(str(index))
    return paths


def evict(folder: Path) -> None:
    """Drop `folder`'s files from the page cache, so that the next read comes from the disk
    (where the system cannot, "cold" reads come from memory too)."""
    if not CAN_EVICT:
        return
    for path in folder.rglob("*"):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def disk_bytes(folder: Path) -> int:
    """Space the files under `folder` take on the disk (allocated blocks, not their length)."""
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file())


def best_of(repeat: int, root: Path, read: Callable[[], Iterable[torch.Tensor]],
            expected: list[torch.Tensor]) -> tuple[float, float]:
    """(cold, warm) seconds of a full read, each the best of `repeat` passes (other processes
    on the machine only ever add time); before each cold pass `root` is evicted."""
    cold = warm = float("inf")
    for _ in range(repeat):
        evict(root)
        cold = min(cold, timed(read, expected))
        warm = min(warm, timed(read, expected))
    return cold, warm


def timed(work: Callable[[], Iterable[torch.Tensor]], expected: list[torch.Tensor]) -> float:
    """Seconds `work` takes to produce its tensors, which must equal `expected`."""
    start = time.perf_counter()
    produced = list(work())
    seconds = time.perf_counter() - start
    if len(produced) != len(expected) or not all(map(torch.equal, produced, expected)):
        raise AssertionError("a tool gave back other tensors than it was given")
    return seconds


def _stored_only(path: Path) -> torch.Tensor:
    raise AssertionError(f"{path}: the benchmark reads only what it stored")


def synthetic_spec() -> ModalitySpec:
    """A modality with the shape of a preprocessed slice; its tensors are stored, not loaded."""
    return ModalitySpec(name="bench", description="benchmark", file_types=(".png",),
                        slice_shape=ITEM_SHAPE, load=_stored_only, build_encoder=_stored_only,
                        labels=())


def measure_m3fm(work: Path, sources: list[Path], tensors: list[torch.Tensor],
                 repeat: int) -> dict:
    spec, root = synthetic_spec(), work / "m3fm"
    cache = PreprocessCache(root)

    def write() -> list[torch.Tensor]:
        for path, tensor in zip(sources, tensors, strict=True):
            cache._write(cache._entry(spec, path), tensor)  # what a miss stores
        return tensors

    def read(reader: PreprocessCache) -> Callable[[], list[torch.Tensor]]:
        return lambda: [reader.load(spec, path) for path in sources]

    written = timed(write, tensors)
    fresh = PreprocessCache(root)  # as in a new run: nothing held in memory
    cold, warm = best_of(repeat, root, read(fresh), tensors)
    return {"tool": "m3fm PreprocessCache (safetensors per entry)", "write_s": written,
            "cold_read_s": cold, "warm_read_s": warm, "disk_bytes": disk_bytes(root)}


def measure_monai(work: Path, sources: list[Path], tensors: list[torch.Tensor],
                  repeat: int) -> dict:
    from monai.data import PersistentDataset
    from monai.transforms import Lambda

    root = work / "monai"
    by_path = {str(path): tensor for path, tensor in zip(sources, tensors, strict=True)}
    items = [{"image": str(path)} for path in sources]
    transform = Lambda(lambda item: {"image": by_path[item["image"]]})

    def read(dataset: PersistentDataset) -> Callable[[], list[torch.Tensor]]:
        return lambda: [dataset[index]["image"] for index in range(len(dataset))]

    written = timed(read(PersistentDataset(items, transform, cache_dir=root)), tensors)
    fresh = PersistentDataset(items, transform, cache_dir=root)
    cold, warm = best_of(repeat, root, read(fresh), tensors)
    return {"tool": "MONAI PersistentDataset (torch.save .pt per item)", "write_s": written,
            "cold_read_s": cold, "warm_read_s": warm, "disk_bytes": disk_bytes(root)}


def measure_webdataset(work: Path, tensors: list[torch.Tensor], repeat: int) -> dict | None:
    """Tar shards of .npy samples (no pickle), read back in order: they offer no random
    access, so "read" is a sequential pass.  None when webdataset is not installed."""
    try:
        import webdataset
    except ImportError:
        return None
    root = work / "webdataset"
    root.mkdir()

    def write() -> list[torch.Tensor]:
        with webdataset.ShardWriter(str(root / "shard-%05d.tar"), maxcount=SHARD_SIZE,
                                    verbose=0) as sink:
            for index, tensor in enumerate(tensors):
                sink.write({"__key__": f"{index:06d}", "npy": tensor.numpy()})
        return tensors

    def read() -> list[torch.Tensor]:
        shards = sorted(str(path) for path in root.glob("*.tar"))
        dataset = webdataset.WebDataset(shards, shardshuffle=False).decode()
        return [torch.from_numpy(sample["npy"]) for sample in dataset]

    written = timed(write, tensors)
    cold, warm = best_of(repeat, root, read, tensors)
    return {"tool": "webdataset tar shards (.npy, sequential)", "write_s": written,
            "cold_read_s": cold, "warm_read_s": warm, "disk_bytes": disk_bytes(root)}


def per_item(figures: dict, count: int) -> dict:
    """Milliseconds per item and kilobytes per item, rounded for the table."""
    return {"tool": figures["tool"],
            **{key.replace("_s", "_ms_per_item"): round(figures[key] / count * 1e3, 3)
               for key in ("write_s", "cold_read_s", "warm_read_s")},
            "disk_kb_per_item": round(figures["disk_bytes"] / count / 1e3, 1)}


@click.command()
@click.option("--count", default=500, show_default=True, help="Synthetic tensors to store.")
@click.option("--repeat", default=3, show_default=True,
              help="Read passes per tool; the best one counts.")
@click.option("--work", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to measure in (its disk is measured); default: a temporary one.")
def main(count: int, repeat: int, work: Path | None) -> None:
    """Compare write time, cold and warm read time and disk size of three on-disk caches."""
    tensors = synthetic_tensors(count)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        folder = Path(scratch)
        sources = source_files(folder / "sources", count)
        rows = [measure_m3fm(folder, sources, tensors, repeat),
                measure_monai(folder, sources, tensors, repeat)]
        wds = measure_webdataset(folder, tensors, repeat)
    rows = [per_item(row, count) for row in [*rows, *([wds] if wds else [])]]
    columns = list(rows[0])
    width = max(len(row["tool"]) for row in rows)
    click.echo(f"{count} tensors of {ITEM_SHAPE} float32; cold reads after posix_fadvise "
               f"DONTNEED: {'yes' if CAN_EVICT else 'no (page cache kept)'}")
    click.echo("  ".join([columns[0].ljust(width), *columns[1:]]))
    for row in rows:
        click.echo("  ".join([row["tool"].ljust(width),
                              *(str(row[column]).rjust(len(column)) for column in columns[1:])]))
    if wds is None:
        click.echo("webdataset: not installed (pip install webdataset to include it)")
    click.echo(json.dumps({"count": count, "shape": ITEM_SHAPE, "results": rows}))


if __name__ == "__main__":
    main()
