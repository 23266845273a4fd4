"""m3fm: multimodal, multidomain, multilingual medical foundation models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("m3fm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


LAZY_SUBMODULES = ("models",)
"""Submodules reachable as attributes of `m3fm` without importing them first
(``m3fm.models.default_model_dir()`` after a bare ``import m3fm``)."""


def __getattr__(name: str):
    # `m3fm.load` pulls in torch and transformers; importing `m3fm` alone (the CLI, the
    # registry, plugins) stays light until it is used.
    if name == "load":
        from m3fm.generation import load

        return load
    if name in LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"m3fm.{name}")
    raise AttributeError(f"module 'm3fm' has no attribute {name!r}")
