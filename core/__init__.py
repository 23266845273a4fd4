"""m3fm: multimodal, multidomain, multilingual medical foundation models."""

LAZY_SUBMODULES = ("models",)
"""Submodules reachable as attributes of `m3fm` without importing them first
(``m3fm.models.default_model_dir()`` after a bare ``import m3fm``)."""


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("m3fm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    # `__version__` reads package metadata (importlib.metadata costs ~0.1 s): on first use,
    # not for `m3fm --help`.
    if name == "__version__":
        globals()["__version__"] = _installed_version()
        return globals()["__version__"]
    # `m3fm.load` pulls in torch and transformers; importing `m3fm` alone (the CLI, the
    # registry, plugins) stays light until it is used.
    if name == "load":
        from m3fm.generation import load

        return load
    if name in LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"m3fm.{name}")
    raise AttributeError(f"module 'm3fm' has no attribute {name!r}")
