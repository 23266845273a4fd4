"""One-line descriptions of pydantic validation errors, for configs and checkpoints."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError) -> str:
    """The first invalid field as ``a.b.c: message (got value)``, plus how many more.

    A field the model does not know comes first: a misspelt ``max_step`` also leaves
    ``max_steps`` missing, and the misspelling is what the user has to fix.
    """
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']} (got {first.get('input')!r:.60}){more}"


def supported_version(version: int, supported: int) -> int:
    """`version` if this m3fm reads it (for a checkpoint config's ``config_version``)."""
    if version != supported:
        raise ValueError(f"version {version} is unsupported; this m3fm reads {supported}")
    return version


def heads_divide_width(hidden_size: int, num_heads: int) -> None:
    """Attention splits the width evenly between heads, so a config must allow it."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
