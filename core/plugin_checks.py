"""The conformance kit's verdicts on the installed plugins, cached until a plugin changes.

Running the kit imports torch, MONAI and timm and reads every plugin's sample files: seconds
on each `m3fm plugins list`, although the verdict can only change when a plugin (or m3fm
itself) is installed, upgraded or edited.  So the verdicts are kept in the user's cache folder
under a fingerprint of what could change them: each plugin's distribution (name, version, its
installed files' sizes and mtimes), its module's source files (editable installs list none),
its sample files, and m3fm's own kit.  A different fingerprint runs the kit again; an
unwritable cache folder only means it runs every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from m3fm import __version__
from m3fm.registry import PLUGIN_API_VERSION, PluginRegistry

CACHE_FILE = "conformance.json"
"""Name of the cached verdicts in the user's cache folder (``platformdirs.user_cache_dir``)."""


@dataclass(frozen=True)
class Verdicts:
    """What the kit found: per ``kind:name:plugin``, None (passed) or ``[check, problem]``;
    and the label-coverage warnings (or the one line saying why labels cannot be prompted)."""

    failures: dict[str, list[str] | None]
    label_warnings: list[str]
    cached: bool = False

    def failure(self, kind: str, name: str, plugin: str) -> list[str] | None:
        return self.failures.get(_key(kind, name, plugin))


def verdicts(registry: PluginRegistry, *, force: bool = False,
             cache_dir: Path | None = None) -> Verdicts:
    """The kit's verdicts on `registry`'s plugins: from the cache when its fingerprint still
    matches (unless `force`), else by running the kit, then stored for next time."""
    cache = (cache_dir or _default_cache_dir()) / CACHE_FILE
    fingerprint = installed_fingerprint(registry)
    if not force:
        stored = _read(cache)
        if stored is not None and stored.get("fingerprint") == fingerprint:
            return Verdicts(stored["failures"], stored["label_warnings"], cached=True)
    found = _run_kit(registry)
    _write(cache, {"fingerprint": fingerprint, "failures": found.failures,
                   "label_warnings": found.label_warnings})
    return found


def installed_fingerprint(registry: PluginRegistry) -> str:
    """A digest of everything a verdict depends on; cheap (file metadata only, no reads)."""
    facts = [f"m3fm {__version__} api {PLUGIN_API_VERSION}"]
    paths = set(_files_of_module("m3fm.registry"))
    for info in sorted(registry.plugins.values(), key=lambda info: info.name):
        facts.append(f"plugin {info.name} {info.module} {info.package} {info.version} "
                     f"{info.status}")
        paths.update(_files_of_module(info.module))
        if info.package:
            paths.update(_files_of_distribution(info.package))
    for provided in registry.all_provided():
        paths.update(Path(path) for path in getattr(provided.spec, "sample_files", ()) or ())
    for path in sorted(paths):
        facts.append(f"{path} {_stat(path)}")
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()


def _run_kit(registry: PluginRegistry) -> Verdicts:
    from m3fm.registry.testing import ConformanceError, first_failure, label_coverage

    failures: dict[str, list[str] | None] = {}
    with tempfile.TemporaryDirectory(prefix="m3fm-conformance-") as scratch:
        for provided in registry.all_provided():
            failure = first_failure(provided.kind, provided.spec, Path(scratch))
            failures[_key(provided.kind, provided.name, provided.plugin.name)] = (
                None if failure is None else [failure.check, failure.problem])
    try:
        label_warnings = label_coverage(registry)
    except ConformanceError as error:
        label_warnings = [str(error)]
    return Verdicts(failures, label_warnings)


def _key(kind: str, name: str, plugin: str) -> str:
    return f"{kind}:{name}:{plugin}"


def _files_of_module(module: str) -> Iterator[Path]:
    """A module's source file, or every file below a package's folder."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        yield origin
        return
    for folder, dirs, files in os.walk(origin.parent):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        yield from (Path(folder) / name for name in files)


def _files_of_distribution(package: str) -> Iterator[Path]:
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return
    for file in distribution.files or ():
        if "__pycache__" not in file.parts:
            yield Path(distribution.locate_file(file))


def _stat(path: Path) -> str:
    try:
        status = path.stat()
    except OSError:
        return "missing"
    return f"{status.st_size} {status.st_mtime_ns}"


def _default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("m3fm"))


def _read(cache: Path) -> dict | None:
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or not {"failures", "label_warnings"} <= stored.keys():
        return None
    return stored


def _write(cache: Path, payload: dict) -> None:
    """Atomically; a cache that cannot be written is simply not kept.  Only a cache miss
    writes, and it has run the kit (torch imported) already."""
    from m3fm.checkpoint import atomic_write_text

    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(payload))
