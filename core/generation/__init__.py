"""Stage 2: MultiMedLM report generation from the shared space (text-only training).

Light to import: the model modules load torch and transformers only when used.
"""

from m3fm.generation.config import DecodeConfig, GeneratorConfig

__all__ = ["DecodeConfig", "GeneratorConfig", "load"]


def __getattr__(name: str):
    if name == "load":
        from m3fm.generation.reporting import load

        return load
    raise AttributeError(f"module 'm3fm.generation' has no attribute {name!r}")
