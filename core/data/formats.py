"""The built-in data set readers, registered through the same hook as any third-party format.

Listed in pyproject.toml under the ``m3fm`` entry-point group, so ``m3fm plugins list`` shows
them next to the others and a plugin can add a format without touching this module.
"""

from __future__ import annotations

from m3fm.registry import DatasetSpec, hookimpl

from . import covctr, covidcxr, manifest, r2gen


@hookimpl
def m3fm_datasets() -> list[DatasetSpec]:
    """The formats m3fm reads out of the box."""
    return [covctr.SPEC, covidcxr.SPEC, r2gen.SPEC, manifest.SPEC]
