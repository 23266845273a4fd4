"""A disk cache of preprocessed images, shared by runs, torchrun ranks and data workers.

Decoding and resampling an image (a CT volume above all) costs far more than reading its
preprocessed tensor back, and a training run reads every image once per epoch; keeping them all
in RAM does not scale to large data sets.  :class:`PreprocessCache` keeps each preprocessed
tensor in one safetensors file (never a pickle), named by what decides its content:

* the input itself: its resolved path, size and modification time (for a DICOM series folder,
  the names, sizes and modification times of its files), so an edited file is read again;
* :func:`preprocessing_fingerprint` of the modality: its name and shapes, the values its loader
  captured (a CT window, an image size), the source of the code it runs and the versions of
  m3fm, the plugin's package and the reading libraries, so changed preprocessing never meets
  tensors made by the old one.

An entry records its key in its metadata and is checked against it, its dtype and its shape when
read; anything that does not match (another m3fm version, a truncated file) is a miss and is
written again, so the cache can return a stale or wrong tensor only if a file keeps its size and
modification time while its content changes.  Writes go to a unique temporary file renamed into
place, so processes filling the same entry at once each leave a complete file and readers never
see half of one.  A cache folder that cannot be written (read-only, full, not creatable) is
reported once per process and preprocessing simply goes on without storing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import re
import secrets
import stat
import struct
import sys
import types
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from m3fm import __version__
from m3fm.imaging import preprocess
from m3fm.registry import ModalitySpec, get_registry

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
"""Layout of an entry (file naming, tensor name, metadata keys); bump it when that changes."""

ENTRY_SUFFIX = ".safetensors"
TENSOR_NAME = "image"

HEADER_LIMIT = 1 << 20
"""Most bytes an entry's JSON header may take; an entry's own takes a few hundred."""

ENGINE_MODULES = ("m3fm.imaging", "m3fm.image_headers")
"""The engine's reading code that every plugin's loader runs through (read_image, FitToSquare):
their source is part of every fingerprint, so editing it in a source checkout invalidates too."""

READING_LIBRARIES = ("torch", "monai", "numpy", "pillow", "pydicom", "nibabel")
"""Libraries whose upgrade may change decoded or resampled values."""

CACHE_ENVIRONMENT = "M3FM_CACHE"
OFF = "off"

_warned_roots: set[Path] = set()
"""Cache folders this process has already warned about, so that the warning comes once."""


@dataclass(frozen=True)
class _Entry:
    """Where one input's tensor is stored, and the metadata that must match to use it."""

    file: Path
    metadata: dict[str, str]


class PreprocessCache:
    """Preprocessed tensors under `root`, one safetensors file per input and modality.

    Cheap to copy into DataLoader workers: it holds the folder, whether writing still works and
    a memo of fingerprints that is not pickled (a worker recomputes it once if it needs it).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._writable = True
        self._fingerprints: dict[int, tuple[ModalitySpec, str]] = {}

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_writable": self._writable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])
        self._writable = state["_writable"]

    @classmethod
    def resolve(cls, setting: str | Path | None = None) -> PreprocessCache | None:
        """The cache a setting names (a recipe's ``data.cache_dir``, a ``--cache-dir`` option).

        A folder path is the cache; ``"off"`` means no cache (None); None falls back to
        $M3FM_CACHE (a folder or ``off``), then to the user's cache folder
        (``platformdirs.user_cache_dir("m3fm")/preprocessed``).  A folder named ``off`` is
        given with its parent, e.g. ``/data/off``.
        """
        if setting is None:
            setting = os.environ.get(CACHE_ENVIRONMENT) or None
        if setting is None:
            import platformdirs

            return cls(Path(platformdirs.user_cache_dir("m3fm")) / "preprocessed")
        if str(setting) == OFF:
            return None
        return cls(Path(setting).expanduser().absolute())

    def load(self, spec: ModalitySpec, path: Path) -> torch.Tensor:
        """``preprocess(spec, path)`` through the cache: the stored tensor on a hit; on a miss
        the freshly preprocessed one, stored for next time.  Raises InputError exactly as
        :func:`~m3fm.imaging.preprocess` does; failures are not stored, so a fixed file or
        plugin is simply read again."""
        path = Path(path)
        try:
            entry = self._entry(spec, path)
        except OSError:  # gone, unlistable, a symlink loop: preprocess says why
            return preprocess(spec, path)
        cached = self._read(entry, spec, path)
        if cached is not None:
            return cached
        tensor = preprocess(spec, path)
        self._write(entry, tensor)
        return tensor

    def contains(self, spec: ModalitySpec, path: Path) -> bool:
        """Whether a usable entry for `path` is stored; reads only the entry's header (and
        its size, so that a file cut short does not count)."""
        try:
            entry = self._entry(spec, Path(path))
            with entry.file.open("rb") as stored:
                prefix = stored.read(8)
                length = _header_length(prefix)
                header = _parse_header(prefix + stored.read(length))
                size = os.fstat(stored.fileno()).st_size
        except (OSError, ValueError):
            return False
        return _complete(header, size - 8 - length) and _mismatch(header, entry, spec) is None

    def disk_usage(self) -> tuple[int, int]:
        """(entries, bytes) stored under the cache folder, by all processes and runs."""
        entries = size = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if name.endswith(ENTRY_SUFFIX):
                    try:
                        size += os.stat(os.path.join(folder, name)).st_size
                    except OSError:  # removed meanwhile by another process
                        continue
                    entries += 1
        return entries, size

    def fingerprint(self, spec: ModalitySpec) -> str:
        """:func:`preprocessing_fingerprint`, computed once per spec in this process."""
        memo = self._fingerprints.get(id(spec))
        if memo is None:  # the memo holds the spec, so its id is not reused meanwhile
            memo = self._fingerprints[id(spec)] = (spec, preprocessing_fingerprint(spec))
        return memo[1]

    def _entry(self, spec: ModalitySpec, path: Path) -> _Entry:
        fingerprint = self.fingerprint(spec)
        source_key = _source_key(path)
        key = hashlib.sha256(f"{fingerprint}\0{source_key}".encode()).hexdigest()
        metadata = {"m3fm": __version__, "format": FORMAT_VERSION,
                    "fingerprint": fingerprint, "source_key": source_key,
                    "source": _printable(os.path.abspath(path))}
        return _Entry(self.root / key[:2] / f"{key}{ENTRY_SUFFIX}", metadata)

    def _read(self, entry: _Entry, spec: ModalitySpec, path: Path) -> torch.Tensor | None:
        """The stored tensor, or None when there is none or it is not usable (logged)."""
        try:
            data = entry.file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.debug("%s: cannot read cache entry %s (%s)", path, entry.file, exc)
            return None
        try:
            reason = _mismatch(_parse_header(data), entry, spec)
            tensor = None if reason else load_safetensors(data)[TENSOR_NAME]
        except Exception as exc:  # safetensors' own error for a damaged file, among others
            reason = f"damaged: {exc}"
        if reason:
            log.debug("%s: cache entry %s not used (%s); preprocessing again",
                      path, entry.file, reason)
            return None
        return tensor

    def _write(self, entry: _Entry, tensor: torch.Tensor) -> None:
        """Store `tensor` atomically: a unique temporary file in the entry's folder, renamed
        over the entry, so concurrent writers of one key each leave a complete file."""
        if not self._writable:
            return
        data = save_safetensors({TENSOR_NAME: tensor.contiguous()}, metadata=entry.metadata)
        temporary = entry.file.with_name(
            f".{entry.file.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            entry.file.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("xb") as out:
                out.write(data)
            os.replace(temporary, entry.file)
        except OSError as exc:
            with contextlib.suppress(OSError):  # none was made, or the folder refuses it too
                temporary.unlink()
            self._stop_writing(exc)

    def _stop_writing(self, exc: OSError) -> None:
        """Go on without storing: a cache must never stop training or inference."""
        self._writable = False
        if self.root not in _warned_roots:
            _warned_roots.add(self.root)
            log.warning("preprocessing cache %s is not writable (%s); continuing without caching",
                        self.root, exc.strerror or exc)


def preprocessing_fingerprint(spec: ModalitySpec) -> str:
    """A hex digest of everything besides the input file that decides `spec`'s tensors.

    The spec's name, shapes and DICOM modalities; the values its `load` captures, followed
    through wrappers, partials, closures and nested functions (numbers, strings, tuples and
    paths by value, other objects by type name); the source of every module that code comes
    from and of the engine's reading code; and the versions of m3fm, of the plugins' packages,
    of the reading libraries and of the cache's format.  So ``ct_spec(window=(40, 400))`` and
    ``ct_spec()`` differ, while the same spec built twice gives the same digest.
    """
    captured: list[str] = []
    modules: set[str] = set(ENGINE_MODULES)
    _capture(spec.load, captured, modules, set())
    described = {
        "format": FORMAT_VERSION,
        "m3fm": __version__,
        "name": spec.name,
        "slice_shape": spec.slice_shape,
        "volume_shape": spec.volume_shape,
        "dicom_modalities": spec.dicom_modalities,
        "libraries": {name: _version(name) for name in READING_LIBRARIES},
        "packages": sorted({_distribution(module) for module in modules} - {None}),
        "captured": captured,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for module in sorted(modules):
        digest.update(module.encode())
        digest.update(hashlib.sha256(_module_source(module)).digest())
    return digest.hexdigest()


def _capture(value: Any, out: list[str], modules: set[str], seen: set[int]) -> None:
    """Append to `out` what `value`, captured by a loader, contributes to the fingerprint,
    and add to `modules` the module of each function reached."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        out.append(f"{type(value).__name__}:{value!r}")
        return
    if isinstance(value, PurePath):
        out.append(f"path:{str(value)!r}")
        return
    if isinstance(value, frozenset):  # a constant of `x in {...}`: set order is per process
        out.append(f"frozenset:{sorted(map(repr, value))}")
        return
    if id(value) in seen:  # recursion (a function that captures itself)
        out.append("seen")
        return
    seen.add(id(value))
    if isinstance(value, tuple):
        out.append(f"tuple:{len(value)}")
        for item in value:
            _capture(item, out, modules, seen)
    elif isinstance(value, functools.partial):
        out.append("partial")
        _capture((value.func, value.args, *sorted(value.keywords.items())), out, modules, seen)
    elif hasattr(value, "__wrapped__"):  # the registry's guard, functools.cache, wraps
        _capture(inspect.unwrap(value), out, modules, seen)
    elif isinstance(value, types.FunctionType):
        _capture_function(value, out, modules, seen)
    elif isinstance(value, types.MethodType):
        out.append(f"method of {_type_name(value.__self__)}")
        _capture(value.__func__, out, modules, seen)
    elif isinstance(value, types.CodeType):
        _capture_code(value, out, modules, seen)
    else:
        out.append(f"object:{_type_name(value)}")


def _capture_function(function: types.FunctionType, out: list[str], modules: set[str],
                      seen: set[int]) -> None:
    modules.add(function.__module__)
    out.append(f"function:{function.__module__}.{function.__qualname__}")
    _capture_code(function.__code__, out, modules, seen)
    _capture(function.__defaults__ or (), out, modules, seen)
    _capture(tuple(sorted((function.__kwdefaults__ or {}).items())), out, modules, seen)
    for cell in function.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # a closure variable not assigned yet
            out.append("empty cell")
            continue
        _capture(contents, out, modules, seen)


def _capture_code(code: types.CodeType, out: list[str], modules: set[str],
                  seen: set[int]) -> None:
    """Bytecode, names and constants: nested functions' code and literals are constants."""
    out.append(f"code:{code.co_qualname}:{code.co_code.hex()}:{code.co_names}")
    _capture(code.co_consts, out, modules, seen)


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


@functools.cache
def _module_source(name: str) -> bytes:
    """The source bytes of an imported module; its name alone when it has no source file."""
    module = sys.modules.get(name)
    if module is None:
        import importlib

        module = importlib.import_module(name)
    try:
        return Path(module.__file__).read_bytes()
    except (TypeError, OSError):  # built in, or from a zip without a file
        return name.encode()


@functools.cache
def _distribution(module: str) -> str | None:
    """``name version`` of the installed package that provides `module`, if one is known: the
    package named like its top-level import name, else the registry's plugin from there.
    (Scanning every installed package's file list instead takes over a second.)"""
    top = module.partition(".")[0]
    try:
        found = importlib.metadata.distribution(top)
    except importlib.metadata.PackageNotFoundError:
        return next((info.source for info in get_registry().plugins.values()
                     if info.package and re.split(r"[.:]", info.module)[0] == top), None)
    return f"{found.metadata['Name']} {found.version}"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _source_key(path: Path) -> str:
    """A digest of the input's identity: resolved path, size and mtime, or for a folder (a DICOM
    series) those of each file in it.  Raises OSError when the input cannot be examined.

    Plain ``os`` calls rather than pathlib: this runs on every hit, where pathlib's objects
    took half the time."""
    resolved = os.path.realpath(path)
    status = os.stat(resolved)
    identity: dict[str, Any] = {"path": _printable(resolved)}
    if stat.S_ISDIR(status.st_mode):
        with os.scandir(resolved) as entries:
            identity["files"] = sorted(_file_identity(entry.name, entry.stat())
                                       for entry in entries if entry.is_file())
    else:
        identity["file"] = _file_identity(os.path.basename(resolved), status)
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _file_identity(name: str, status: os.stat_result) -> tuple[str, int, int]:
    return _printable(name), status.st_size, status.st_mtime_ns


def _printable(path: str | Path) -> str:
    """The path as text that encodes to UTF-8 (a file name need not be valid UTF-8)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _header_length(prefix: bytes) -> int:
    """The header length a safetensors file's first 8 bytes give; ValueError when they are
    cut short or give more than an entry's header ever takes (a damaged file)."""
    if len(prefix) < 8:
        raise ValueError("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > HEADER_LIMIT:
        raise ValueError(f"its header would take {length} bytes")
    return length


def _parse_header(data: bytes) -> dict[str, Any]:
    """The JSON header at the start of safetensors `data`; ValueError when it is damaged."""
    header = json.loads(data[8 : 8 + _header_length(data)])
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header


def _complete(header: dict[str, Any], data_size: int) -> bool:
    """Whether the tensor data after the header is as long as the header says."""
    offsets = _mapping(header.get(TENSOR_NAME)).get("data_offsets")
    return isinstance(offsets, list) and offsets[-1:] == [data_size]


def _mismatch(header: dict[str, Any], entry: _Entry, spec: ModalitySpec) -> str | None:
    """Why a stored entry cannot stand for `entry`, or None when it can."""
    stored = _mapping(header.get("__metadata__"))
    for key in ("m3fm", "format", "fingerprint", "source_key"):
        if stored.get(key) != entry.metadata[key]:
            return f"its {key} is {stored.get(key)!r}, not {entry.metadata[key]!r}"
    tensor = _mapping(header.get(TENSOR_NAME))
    shapes = [list(spec.slice_shape)] + ([list(spec.volume_shape)] if spec.volume_shape else [])
    if tensor.get("dtype") != "F32" or tensor.get("shape") not in shapes:
        return f"it holds a {tensor.get('dtype')} tensor of shape {tensor.get('shape')}"
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
