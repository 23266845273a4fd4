"""One-line descriptions of pydantic validation errors, for configs and checkpoints."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError) -> str:
    """The first invalid field as ``a.b.c: message (got value)``, plus how many more."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']} (got {first.get('input')!r:.60}){more}"
