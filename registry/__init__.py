"""The plugin contract of m3fm: hook specifications, spec types, discovery and lookup.

Third-party packages import from here only::

    from m3fm.registry import hookimpl, LanguageSpec

This package is the bottom layer: it imports nothing from the engine.
"""

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
from .guard import PluginError
from .hookspecs import hookimpl, hookspec
from .manager import (
    ENTRY_POINT_GROUP,
    KINDS,
    PLUGIN_API_VERSION,
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
