"""Checkpoint directories: safetensors weights, metadata, atomic writes, the latest pointer."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from conftest import REPO
from torch import nn

from m3fm.checkpoint import (
    LATEST_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    CheckpointStore,
    copy_checkpoint,
    load_model_weights,
    read_metadata,
    save_model_file,
    save_model_files,
    save_tensor_file,
    write_directory_atomically,
)


class TiedLanguageModel(nn.Module):
    """An embedding shared with the output layer, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def write_weights(directory, model=None):
    save_model_files(directory, model or nn.Linear(2, 2), metadata={"step": 1})


def test_tied_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    saved, loaded = TiedLanguageModel(), TiedLanguageModel()
    save_model_files(tmp_path, saved, metadata={"step": 3})
    load_model_weights(loaded, tmp_path)
    assert torch.equal(loaded.embed.weight, saved.embed.weight)
    assert loaded.head.weight is loaded.embed.weight


def test_metadata_records_provenance_and_artifacts(tmp_path):
    def artifacts(directory):
        (directory / "config.json").write_text("{}")

    save_model_files(tmp_path, nn.Linear(2, 2), metadata={"step": 7}, artifacts=artifacts)
    metadata = read_metadata(tmp_path)
    assert metadata["step"] == 7 and metadata["torch_version"] == torch.__version__
    assert {"m3fm_version", "git_commit", "created"} <= metadata.keys()
    assert (tmp_path / "config.json").is_file()


def test_weights_that_do_not_fit_are_a_one_line_error(tmp_path):
    save_model_files(tmp_path, nn.Linear(2, 2), metadata={})
    with pytest.raises(CheckpointError) as error:
        load_model_weights(nn.Linear(3, 2), tmp_path)
    assert "\n" not in str(error.value) and "size mismatch" in str(error.value)
    with pytest.raises(CheckpointError, match="missing"):
        load_model_weights(nn.Sequential(nn.Linear(2, 2)), tmp_path)


def test_a_failed_write_leaves_no_directory(tmp_path):
    def fill(directory):
        write_weights(directory)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_directory_atomically(tmp_path / "ckpt", fill)
    assert list(tmp_path.iterdir()) == []


def test_store_points_to_the_newest_save_and_prunes(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.latest() is None
    for step in (5, 10, 15):
        store.save(step, write_weights)
    assert store.latest() == tmp_path / "step-000015"
    assert (tmp_path / LATEST_NAME).read_text().strip() == "step-000015"
    store.prune(keep=2)
    assert list(store.steps()) == [10, 15]
    store.discard_after(10)
    assert list(store.steps()) == [10]


def test_a_killed_write_is_ignored_then_replaced(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, write_weights)
    leftover = tmp_path / ".step-000010.partial"  # what a process killed mid-save leaves
    leftover.mkdir()
    (leftover / WEIGHTS_NAME).write_bytes(b"half a file")
    assert list(store.steps()) == [5] and store.latest() == tmp_path / "step-000005"
    store.save(10, write_weights)
    assert not leftover.exists() and list(store.steps()) == [5, 10]


def test_a_kill_before_the_pointer_is_written_keeps_the_renamed_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, write_weights)
    store.save(10, write_weights)
    (tmp_path / LATEST_NAME).unlink()  # killed after the rename, before the pointer
    assert store.latest() == tmp_path / "step-000010"


def test_saving_a_step_again_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, lambda d: save_model_files(d, nn.Linear(2, 2), metadata={"run": 1}))
    store.save(5, lambda d: save_model_files(d, nn.Linear(2, 2), metadata={"run": 2}))
    assert read_metadata(store.latest())["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST_NAME, "step-000005"]


def test_a_pointer_to_a_missing_checkpoint_is_an_error(tmp_path):
    (tmp_path / LATEST_NAME).write_text("step-000042\n")
    with pytest.raises(CheckpointError, match="step-000042"):
        CheckpointStore(tmp_path).latest()


def test_copy_leaves_out_files_and_replaces_the_target(tmp_path):
    source = tmp_path / "step"
    write_directory_atomically(source, write_weights)
    (source / "training_state.pt").write_bytes(b"optimizer")
    target = tmp_path / "final"
    target.mkdir()
    (target / "stale.json").write_text(json.dumps({}))
    copy_checkpoint(source, target, exclude=["training_state.pt"])
    assert sorted(p.name for p in target.iterdir()) == ["metadata.json", WEIGHTS_NAME]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_weights_are_as_readable_as_the_json_beside_them(tmp_path):
    # safetensors 0.8 creates its files 0600 whatever the umask (safetensors issue #782)
    def fill(directory):
        save_tensor_file({"w": torch.ones(2)}, directory / "tensors.safetensors")
        save_model_file(nn.Linear(2, 2), directory / "model.safetensors")
        (directory / "config.json").write_text("{}")

    previous = os.umask(0o022)
    try:
        folder = write_directory_atomically(tmp_path / "model", fill)
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert modes == {"tensors.safetensors": 0o644, "model.safetensors": 0o644,
                     "config.json": 0o644}


def test_every_safetensors_file_is_written_through_the_checkpoint_helpers():
    """The mode fix above lives in two helpers: a module calling safetensors' own writers
    would bring the 0600 files back."""
    writer = re.compile(r"from safetensors\.torch import[^\n]*\b(save_file|save_model)\b")
    sources = [path for folder in ("core", "plugins", "registry")
               for path in (REPO / folder).rglob("*.py")]
    assert len(sources) > 50
    assert [str(path.relative_to(REPO)) for path in sources
            if writer.search(path.read_text(encoding="utf-8"))] == ["core/checkpoint.py"]
