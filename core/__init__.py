"""m3fm: multimodal, multidomain, multilingual medical foundation models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("m3fm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    # `m3fm.load` pulls in torch and transformers; importing `m3fm` alone (the CLI, the
    # registry, plugins) stays light until it is used.
    if name == "load":
        from m3fm.generation import load

        return load
    raise AttributeError(f"module 'm3fm' has no attribute {name!r}")
