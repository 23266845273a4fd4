"""m3fm: multimodal, multidomain, multilingual medical foundation models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("m3fm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
