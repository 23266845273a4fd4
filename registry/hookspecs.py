"""The hooks a plugin implements.

A plugin is any importable module (or object) with functions marked ``@hookimpl`` whose names
match the specifications below, advertised through the ``m3fm`` entry-point group::

    [project.entry-points.m3fm]
    mri = "m3fm_mri.plugin"

Each hook returns a list of spec objects; returning an empty list is fine.  A plugin that needs
a particular version of this contract sets ``M3FM_API = ">=1.0,<2"`` (a PEP 440 specifier) in
its module; if :data:`~m3fm.registry.PLUGIN_API_VERSION` does not satisfy it, the plugin is
reported as incompatible and skipped.
"""

from __future__ import annotations

import pluggy

from .specs import DatasetSpec, LabelSpec, LanguageSpec, ModalitySpec

PROJECT = "m3fm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marker for hook implementations: decorate plugin functions with ``@hookimpl``."""


@hookspec
def m3fm_modalities() -> list[ModalitySpec]:
    """Return the imaging modalities this plugin provides."""


@hookspec
def m3fm_languages() -> list[LanguageSpec]:
    """Return the report languages this plugin provides."""


@hookspec
def m3fm_datasets() -> list[DatasetSpec]:
    """Return the data set formats this plugin can read."""


@hookspec
def m3fm_labels() -> list[LabelSpec]:
    """Return the diagnosis labels this plugin declares, or adds prompts to (since plugin API
    1.5): entries of one label id from several plugins are merged."""
