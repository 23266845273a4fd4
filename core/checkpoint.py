"""Checkpoint directories in the Hugging Face style, written so that a crash never corrupts one.

A checkpoint is a directory: ``model.safetensors`` (weights only, so loading runs no code),
whatever the stage adds (``config.json``, tokenizer files) and ``metadata.json`` (step,
metrics, data, code version).  Every directory is first written under a hidden ``.NAME.partial``
sibling, flushed to disk and only then renamed into place, so a directory with a checkpoint's
name is always complete; readers ignore the hidden partial ones.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

import m3fm
from m3fm.registry.errors import M3fmError

WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "metadata.json"
LATEST_NAME = "latest"
DAMAGED = "the checkpoint is damaged: re-download it or retrain it"
_STEP_NAME = re.compile(r"step-(\d+)")


class CheckpointError(M3fmError):
    """A checkpoint that is missing, incomplete, unreadable or does not fit the model.

    Fix: point at a complete folder written by m3fm (a run's ``final/`` or one of its
    ``checkpoints/step-N/``), made by this version for the same model settings; retrain if the
    model changed since.  A file the message calls damaged cannot be repaired: download the
    checkpoint again or retrain it.
    """


def save_model_files(
    directory: Path,
    model: torch.nn.Module,
    *,
    metadata: dict[str, Any],
    artifacts: Callable[[Path], None] | None = None,
) -> None:
    """Write the weights, the stage's artifacts and ``metadata.json`` (plus provenance).

    Not atomic by itself: call it inside :func:`write_directory_atomically`. Tied (shared)
    tensors are stored once; :func:`load_model_weights` re-ties them.
    """
    save_model_file(model, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    if artifacts is not None:
        artifacts(directory)
    record = {**metadata, **provenance()}
    text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    (directory / METADATA_NAME).write_text(text + "\n", encoding="utf-8")


def load_model_weights(
    model: torch.nn.Module, directory: Path, *, device: torch.device | str = "cpu"
) -> None:
    """Load ``model.safetensors`` from a checkpoint directory into `model`, strictly."""
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"no {WEIGHTS_NAME} in {directory}")
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
    except SafetensorError as error:
        raise CheckpointError(
            f"{weights}: not a complete safetensors file ({error}); {DAMAGED}"
        ) from None
    except (RuntimeError, OSError) as error:
        detail = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"cannot load {weights}: {detail}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit the model: {_some(missing)} missing,"
            f" {_some(unexpected)} unexpected"
        )


def read_metadata(directory: Path) -> dict[str, Any]:
    """The ``metadata.json`` of a checkpoint directory."""
    return read_json_object(Path(directory) / METADATA_NAME)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in a checkpoint file; a damaged file is named with what is wrong.

    Libraries would report an empty or binary file as a decoding error deep in their code.
    """
    try:
        found = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError as error:
        problem = f"not text (byte {error.start} is not UTF-8)"
    except json.JSONDecodeError as error:
        where = f"{error.msg}, line {error.lineno}"
        problem = f"not JSON ({where})" if error.doc.strip() else "empty"
    else:
        if isinstance(found, dict):
            return found
        problem = f"a JSON {type(found).__name__}, not an object"
    raise CheckpointError(f"{path}: {problem}; {DAMAGED}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (which holds data only, never code), or one line
    naming the file when it is cut short or not safetensors at all."""
    return read_safetensors_with_metadata(path)[0]


def read_safetensors_with_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and the string metadata of its header (empty when
    it has none), read in one opening; damage is one line as in :func:`read_safetensors`."""
    try:
        with safe_open(str(path), framework="pt") as opened:
            tensors = {key: opened.get_tensor(key) for key in opened.keys()}  # noqa: SIM118
            return tensors, opened.metadata() or {}
    except SafetensorError as error:
        raise CheckpointError(
            f"{path}: not a complete safetensors file ({error}); {DAMAGED}"
        ) from None


def save_tensor_file(tensors: dict[str, torch.Tensor], path: Path,
                     metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, leaving the file readable as the umask says."""
    save_file(tensors, str(path), metadata=metadata)
    _give_umask_mode(path)


def save_model_file(model: torch.nn.Module, path: Path,
                    metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_model`` (tied tensors stored once), leaving the file readable
    as the umask says."""
    save_model(model, str(path), metadata=metadata)
    _give_umask_mode(path)


def _give_umask_mode(path: Path) -> None:
    """Give a written file the mode an ordinary new file gets (0o666 less the umask).

    safetensors 0.8 writes through a temporary file created 0600 and renamed into place
    (safetensors issue #782), so a model trained on a shared server would be readable by
    its owner only, unlike the JSON files beside it.  Every m3fm safetensors write goes
    through :func:`save_tensor_file` or :func:`save_model_file`, which call this.
    """
    mask = os.umask(0o077)  # reading the umask means setting it: set straight back
    os.umask(mask)
    Path(path).chmod(0o666 & ~mask)


def provenance() -> dict[str, Any]:
    """Which code wrote a checkpoint, and when: enough to reproduce or to distrust it."""
    return {
        "m3fm_version": m3fm.__version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@functools.cache
def _git_commit() -> str | None:
    """The commit of the m3fm source tree, when it is a git checkout (editable installs)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(m3fm.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def atomic_write_text(path: Path, text: str) -> None:
    """Replace a small text file so that readers see either the old or the new content."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    _fsync_directory(path.parent)


def write_directory_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create (or replace) directory `target` with what `fill` writes into an empty directory.

    `fill` works in the hidden sibling ``.NAME.partial``; after it returns, every file is
    fsynced and the directory renamed to `target`.  If `fill` fails, the partial directory is
    removed; if the process dies, the leftover partial directory is ignored and later replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        fill(partial)
        _fsync_tree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _replace_directory(partial, target)
    return target


def copy_checkpoint(source: Path, target: Path, *, exclude: Iterable[str] = ()) -> Path:
    """Atomically copy a checkpoint directory, leaving out the file names in `exclude`."""
    ignored = shutil.ignore_patterns(*exclude)

    def fill(directory: Path) -> None:
        shutil.copytree(source, directory, ignore=ignored, dirs_exist_ok=True)

    return write_directory_atomically(target, fill)


class CheckpointStore:
    """The step checkpoints of one run: ``ROOT/step-000120/`` and the pointer ``ROOT/latest``.

    The pointer, a one-line text file naming the newest complete checkpoint, is rewritten
    atomically after each save; it is what a resumed run reads.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def name(step: int) -> str:
        """The directory name of the checkpoint taken after optimiser step `step`."""
        return f"step-{step:06d}"

    def save(self, step: int, fill: Callable[[Path], None]) -> Path:
        """Write the checkpoint of `step` atomically, then point ``latest`` at it."""
        directory = write_directory_atomically(self.root / self.name(step), fill)
        atomic_write_text(self.root / LATEST_NAME, directory.name + "\n")
        return directory

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` points to; None when nothing was saved yet.

        Without a pointer, the newest step directory: a run killed between renaming a
        checkpoint into place and writing the pointer still left it complete.
        """
        pointer = self.root / LATEST_NAME
        if not pointer.is_file():
            complete = [d for d in self.steps().values() if (d / WEIGHTS_NAME).is_file()]
            return complete[-1] if complete else None
        directory = self.root / pointer.read_text(encoding="utf-8").strip()
        if not (directory / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{pointer} points to {directory}, which is missing or empty")
        return directory

    def steps(self) -> dict[int, Path]:
        """Every complete step checkpoint, by step (partial directories are hidden, not listed)."""
        found = {}
        for directory in self.root.glob("step-*"):
            match = _STEP_NAME.fullmatch(directory.name)
            if match and directory.is_dir():
                found[int(match.group(1))] = directory
        return dict(sorted(found.items()))

    def prune(self, keep: int) -> None:
        """Delete all but the `keep` newest step checkpoints (never the one ``latest`` names)."""
        latest = self.latest()
        for directory in list(self.steps().values())[:-keep]:
            if directory != latest:
                shutil.rmtree(directory)

    def discard_after(self, step: int) -> None:
        """Delete checkpoints newer than `step`: the future of a run that is being resumed."""
        for saved_step, directory in self.steps().items():
            if saved_step > step:
                shutil.rmtree(directory)


def _replace_directory(source: Path, target: Path) -> None:
    """Rename `source` to `target`; an existing `target` is moved aside first, then deleted."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(source, target)
        shutil.rmtree(retired)
    else:
        os.replace(source, target)
    _fsync_directory(target.parent)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
        else:
            _fsync_directory(path)
    _fsync_directory(root)


def _fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable; only POSIX can open (and so sync) a directory."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _some(names: Iterable[str], shown: int = 3) -> str:
    names = sorted(names)
    listed = ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
    return f"{len(names)} ({listed})" if names else "0"
