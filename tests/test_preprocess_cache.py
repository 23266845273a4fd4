"""The preprocessing cache: hits without the plugin, invalidation by file and by preprocessing,
damaged or foreign entries never used, concurrent writers, unwritable folders, and
`m3fm data cache`."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from safetensors.torch import load_file, save_file

from m3fm.data import cache as cache_module
from m3fm.data.cache import PreprocessCache, preprocessing_fingerprint
from m3fm.imaging import preprocess
from m3fm.plugins.ct import ct_spec
from m3fm.registry import InputError, get_registry


def _picture(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    """A small random grey PNG: fast to preprocess, and never constant."""
    pixels = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _counting(spec):
    """`spec` with a load that counts its calls in the returned list."""
    calls: list[Path] = []
    load = spec.load

    def counting_load(path: Path) -> torch.Tensor:
        calls.append(path)
        return load(path)

    return spec.model_copy(update={"load": counting_load}), calls


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


@pytest.fixture
def cxr():
    return get_registry().modality("cxr")


@pytest.fixture
def image(tmp_path) -> Path:
    return _picture(tmp_path / "chest.png")


@pytest.fixture
def cache(tmp_path) -> PreprocessCache:
    return PreprocessCache(tmp_path / "cache")


def test_a_hit_returns_the_stored_tensor_without_the_plugin(cxr, image, cache):
    spec, calls = _counting(cxr)
    first = cache.load(spec, image)
    again = cache.load(spec, image)
    assert len(calls) == 1 and torch.equal(first, again)
    assert torch.equal(again, preprocess(cxr, image))
    assert again.dtype == torch.float32 and again.shape == cxr.slice_shape
    assert len(_entries(cache.root)) == 1 and cache.contains(spec, image)
    again.add_(1)  # the tensor is the caller's own: changing it changes no later hit
    assert torch.equal(cache.load(spec, image), first)


def test_a_changed_file_is_preprocessed_again(cxr, image, cache):
    spec, calls = _counting(cxr)
    cache.load(spec, image)
    _picture(image, seed=1, size=(30, 30))
    os.utime(image, ns=(10**18, 10**18))
    assert not cache.contains(spec, image)
    assert torch.equal(cache.load(spec, image), preprocess(cxr, image))
    assert len(calls) == 2


def test_the_fingerprint_follows_the_preprocessing():
    lung = preprocessing_fingerprint(ct_spec())
    assert preprocessing_fingerprint(ct_spec()) == lung
    assert preprocessing_fingerprint(get_registry().modality("ct")) == lung  # guard unwrapped
    assert preprocessing_fingerprint(ct_spec(window=(40, 400))) != lung
    assert preprocessing_fingerprint(ct_spec(image_size=128)) != lung
    assert preprocessing_fingerprint(ct_spec(name="ct-copy")) != lung
    assert preprocessing_fingerprint(get_registry().modality("cxr")) != lung


def test_another_window_is_another_entry(image, cache):
    cache.load(ct_spec(), image)
    cache.load(ct_spec(window=(40, 400)), image)
    assert len(_entries(cache.root)) == 2


def test_a_truncated_entry_is_preprocessed_again(cxr, image, cache):
    spec, calls = _counting(cxr)
    expected = cache.load(spec, image)
    [entry] = _entries(cache.root)
    entry.write_bytes(entry.read_bytes()[:-100])
    assert not cache.contains(spec, image)
    assert torch.equal(cache.load(spec, image), expected) and len(calls) == 2
    assert torch.equal(load_file(entry)["image"], expected)  # written again, whole


@pytest.mark.parametrize("change", ["m3fm version", "shape", "dtype"])
def test_an_entry_that_does_not_match_is_not_used(cxr, image, cache, change):
    spec, calls = _counting(cxr)
    expected = cache.load(spec, image)
    [entry] = _entries(cache.root)
    metadata = _metadata(entry)
    tensor = torch.zeros(cxr.slice_shape)
    if change == "m3fm version":
        metadata["m3fm"] = "0.0.1"
    elif change == "shape":
        tensor = torch.zeros(1, 8, 8)
    else:
        tensor = tensor.double()
    save_file({"image": tensor}, entry, metadata=metadata)
    assert torch.equal(cache.load(spec, image), expected) and len(calls) == 2


def _metadata(entry: Path) -> dict[str, str]:
    data = entry.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length])["__metadata__"]


def test_a_bad_file_raises_input_error_and_stores_nothing(cxr, tmp_path, cache):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    for missing_or_bad in (bad, tmp_path / "missing.png"):
        with pytest.raises(InputError, match=str(missing_or_bad.name)):
            cache.load(cxr, missing_or_bad)
    assert _entries(cache.root) == []


def _fill_at_once(cache: PreprocessCache, spec, image: Path, expected: torch.Tensor,
                  barrier) -> None:
    torch.set_num_threads(1)  # as in DataLoader workers: a forked OpenMP pool can deadlock
    barrier.wait()
    assert torch.equal(cache.load(spec, image), expected)


def test_concurrent_writers_all_get_the_tensor_and_leave_one_entry(cxr, image, cache):
    expected = preprocess(cxr, image)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_fill_at_once, args=(cache, cxr, image, expected, barrier),
                               daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        if worker.exitcode is None:
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert [path.name for path in cache.root.rglob("*") if path.is_file()] == \
        [entry.name for entry in _entries(cache.root)]  # no temporary file left
    assert len(_entries(cache.root)) == 1
    assert torch.equal(cache.load(cxr, image), expected)


def _not_writable(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if "is not writable" in record.getMessage()]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_warns_once_and_goes_on(cxr, image, tmp_path, caplog):
    root = tmp_path / "read-only"
    root.mkdir()
    root.chmod(0o555)
    cache = PreprocessCache(root)
    spec, calls = _counting(cxr)
    try:
        with caplog.at_level(logging.WARNING, logger="m3fm"):
            assert torch.equal(cache.load(spec, image), preprocess(cxr, image))
            cache.load(spec, image)
    finally:
        root.chmod(0o755)
    assert _not_writable(caplog) == [f"preprocessing cache {root} is not writable "
                                      "(Permission denied); continuing without caching"]
    assert len(calls) == 2 and _entries(root) == []


def test_a_full_disk_warns_and_leaves_no_temporary_file(cxr, image, cache, monkeypatch, caplog):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module.os, "replace", full)
    with caplog.at_level(logging.WARNING, logger="m3fm"):
        assert torch.equal(cache.load(cxr, image), preprocess(cxr, image))
    assert _not_writable(caplog) == [f"preprocessing cache {cache.root} is not writable "
                                      "(No space left on device); continuing without caching"]
    assert [path for path in cache.root.rglob("*") if path.is_file()] == []


def test_a_cache_folder_that_cannot_be_created_warns(cxr, image, tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    cache = PreprocessCache(tmp_path / "a-file" / "cache")
    with caplog.at_level(logging.WARNING, logger="m3fm"):
        assert torch.equal(cache.load(cxr, image), preprocess(cxr, image))
    assert len(_not_writable(caplog)) == 1


def test_the_cache_pickles_small(cxr, image, cache):
    cache.load(cxr, image)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.root == cache.root and copy.contains(cxr, image)
    assert len(pickle.dumps(cache)) < 500


def test_a_series_folder_is_keyed_by_its_files(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"one")
    key = cache_module._source_key(series)
    assert cache_module._source_key(series) == key
    (series / "2.dcm").write_bytes(b"two")
    added = cache_module._source_key(series)
    (series / "1.dcm").write_bytes(b"ONE!")
    assert len({key, added, cache_module._source_key(series)}) == 3


def test_resolve(tmp_path, monkeypatch):
    monkeypatch.delenv("M3FM_CACHE", raising=False)
    assert PreprocessCache.resolve(tmp_path).root == tmp_path
    assert PreprocessCache.resolve("off") is None
    assert PreprocessCache.resolve().root.parts[-2:] == ("m3fm", "preprocessed")
    monkeypatch.setenv("M3FM_CACHE", str(tmp_path / "env"))
    assert PreprocessCache.resolve().root == tmp_path / "env"
    assert PreprocessCache.resolve(tmp_path / "given").root == tmp_path / "given"
    monkeypatch.setenv("M3FM_CACHE", "off")
    assert PreprocessCache.resolve() is None


def _summary(out: str) -> dict:
    return json.loads(out)


def test_cli_caches_then_finds_them_cached(capsys, tmp_path):
    images = [_picture(tmp_path / f"{index}.png", seed=index) for index in range(3)]
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    args = ("data", "cache", "--plugin", "cxr", "--cache-dir", str(tmp_path / "c"), "--json")
    code, out, err = run_cli(capsys, *args, str(tmp_path))
    assert code == 1
    [error] = err.strip().splitlines()
    assert error.startswith(f"m3fm: error: {tmp_path / 'broken.png'}: cannot read it as cxr input")
    summary = _summary(out)
    assert (summary["cached"], summary["already_cached"], summary["failed"]) == (3, 0, 1)
    assert summary["entries"] == 3 and summary["bytes"] > 3 * 224 * 224 * 4
    code, out, _ = run_cli(capsys, *args, "--workers", "2", *map(str, images))
    assert code == 0
    assert (_summary(out)["cached"], _summary(out)["already_cached"]) == (0, 3)


def test_cli_with_workers_and_a_table(capsys, tmp_path):
    images = [_picture(tmp_path / f"{index}.png", seed=index) for index in range(4)]
    code, out, _ = run_cli(capsys, "data", "cache", "--plugin", "cxr", "--workers", "2",
                           "--cache-dir", str(tmp_path / "c"), *map(str, images))
    assert code == 0 and "already cached" in out
    assert len(_entries(tmp_path / "c")) == 4


def test_cli_takes_this_ranks_share(capsys, tmp_path, monkeypatch):
    images = [_picture(tmp_path / f"{index}.png", seed=index) for index in range(5)]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, out, _ = run_cli(capsys, "data", "cache", "--plugin", "cxr", "--json",
                           "--cache-dir", str(tmp_path / "c"), *map(str, images))
    assert code == 0 and _summary(out)["cached"] == 2
    cache = PreprocessCache(tmp_path / "c")
    spec = get_registry().modality("cxr")
    assert [cache.contains(spec, image) for image in images] == [False, True, False, True, False]


def test_cli_honours_m3fm_cache(capsys, tmp_path, monkeypatch):
    image = _picture(tmp_path / "one.png")
    monkeypatch.setenv("M3FM_CACHE", str(tmp_path / "env"))
    code, _, _ = run_cli(capsys, "data", "cache", "--plugin", "cxr", str(image))
    assert code == 0 and len(_entries(tmp_path / "env")) == 1
    monkeypatch.setenv("M3FM_CACHE", "off")
    code, _, err = run_cli(capsys, "data", "cache", "--plugin", "cxr", str(image))
    assert code == 2 and "the preprocessing cache is off" in err


def test_cli_caches_a_data_set(capsys, tmp_path):
    for index in range(2):
        _picture(tmp_path / f"{index}.png", seed=index)
    (tmp_path / "manifest.csv").write_text(
        "image,modality,language,report,split\n"
        "0.png,cxr,en,Clear lungs.,train\n"
        "0.png,cxr,zh,双肺清晰。,train\n"
        "1.png,ct,en,Ground-glass opacity.,test\n"
    )
    cache_dir = str(tmp_path / "c")
    code, out, _ = run_cli(capsys, "data", "cache", "--data", str(tmp_path), "--split", "train",
                           "--cache-dir", cache_dir, "--json")
    assert code == 0 and _summary(out)["cached"] == 1  # one image, however many reports
    code, out, _ = run_cli(capsys, "data", "cache", "--data", str(tmp_path),
                           "--cache-dir", cache_dir, "--json")
    assert code == 0 and (_summary(out)["cached"], _summary(out)["already_cached"]) == (1, 1)


def test_the_cache_benchmark_runs(tmp_path):
    from click.testing import CliRunner

    from m3fm.benchmarks import cache_tools

    result = CliRunner().invoke(cache_tools.main, ["--count", "3", "--repeat", "1",
                                                   "--work", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert [row["tool"].split()[0] for row in figures["results"]][:2] == ["m3fm", "MONAI"]
    assert all(row["disk_kb_per_item"] > 200 for row in figures["results"])
