"""The plugin contract of m3fm: hook specifications, spec types, discovery and lookup.

Third-party packages import from here only::

    from m3fm.registry import hookimpl, LanguageSpec

This package is the bottom layer: it imports nothing from the engine.  Its names load on first
use, so importing it for an error class or the contract version stays cheap.
"""

from typing import TYPE_CHECKING

from .contract import PLUGIN_API_VERSION
from .errors import (
    ConfigError,
    DataFormatError,
    InputError,
    M3fmError,
    MissingDataError,
    NotAvailableError,
    PluginConflictError,
    UnknownNameError,
    UsageError,
)

if TYPE_CHECKING:
    from .guard import PluginError
    from .hookspecs import hookimpl, hookspec
    from .manager import (
        ENTRY_POINT_GROUP,
        KINDS,
        PluginInfo,
        PluginRegistry,
        Provided,
        get_registry,
        reset_registry,
    )
    from .specs import (
        ANCHOR_LANGUAGE,
        DatasetSpec,
        EncoderOptions,
        Finding,
        LabelPrompts,
        LabelSpec,
        LanguageSpec,
        ModalitySpec,
        ReadResult,
        Record,
        RowProblem,
    )

_LAZY = {
    "PluginError": "guard",
    **dict.fromkeys(("hookimpl", "hookspec"), "hookspecs"),
    **dict.fromkeys(("ENTRY_POINT_GROUP", "KINDS", "PluginInfo", "PluginRegistry", "Provided",
                     "get_registry", "reset_registry"), "manager"),
    **dict.fromkeys(("ANCHOR_LANGUAGE", "DatasetSpec", "EncoderOptions", "Finding",
                     "LabelPrompts", "LabelSpec", "LanguageSpec", "ModalitySpec", "ReadResult",
                     "Record", "RowProblem"), "specs"),
}
"""Names loaded on first use (PEP 562): the errors and the contract version cost nothing, so
the CLI's help and error paths do not load pluggy and pydantic."""


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ANCHOR_LANGUAGE",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PLUGIN_API_VERSION",
    "ConfigError",
    "DataFormatError",
    "DatasetSpec",
    "EncoderOptions",
    "Finding",
    "InputError",
    "LabelPrompts",
    "LabelSpec",
    "LanguageSpec",
    "M3fmError",
    "MissingDataError",
    "ModalitySpec",
    "NotAvailableError",
    "PluginConflictError",
    "PluginError",
    "PluginInfo",
    "PluginRegistry",
    "Provided",
    "ReadResult",
    "Record",
    "RowProblem",
    "UnknownNameError",
    "UsageError",
    "get_registry",
    "hookimpl",
    "hookspec",
    "reset_registry",
]
