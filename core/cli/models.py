"""Loading the model a verb works with, and the decoding options verbs share."""

from __future__ import annotations

from pathlib import Path

import click

from m3fm.registry import UsageError


def repetition_options(command):
    """``--repetition-penalty`` and ``--repeated-clauses``, shared by `run` and `evaluate`."""
    command = click.option(
        "--repeated-clauses", type=click.Choice(["keep", "drop", "block"]),
        help="A clause that repeats an earlier one of the report: drop it after decoding, "
        "block it while decoding (and drop what is left), or keep it; default: the model's.",
    )(command)
    return click.option(
        "--repetition-penalty", type=click.FloatRange(min=1),
        help="Divide the scores of tokens already written by this (1: no penalty); default: "
        "the model's.",
    )(command)


def decoding(default, bridge: str | None, beams: int | None, temperature: float | None,
             repetition_penalty: float | None = None, repeated_clauses: str | None = None):
    """`default` (a DecodeConfig) with the decoding options given on the command line
    (None: not given, the model's own setting stays).

    Validated like a recipe's decoding section, so a value the config refuses (a NaN
    temperature, a beam too wide to fit in memory) is a usage error instead of garbage.
    """
    from pydantic import ValidationError

    from m3fm.validation import describe_validation_error

    changes = {"bridge": bridge, "num_beams": beams, "memory_temperature": temperature,
               "repetition_penalty": repetition_penalty, "repeated_clauses": repeated_clauses}
    given = {key: value for key, value in changes.items() if value is not None}
    try:
        return type(default).model_validate({**default.model_dump(), **given})
    except ValidationError as exc:
        raise UsageError(f"decoding option: {describe_validation_error(exc)}") from None


def load_model(checkpoint: Path | None, reports: bool):
    """The model in `checkpoint` (the bundled default when None); a report model if `reports`.

    `checkpoint` comes through :class:`~m3fm.cli.app.ModelFolder`: a folder holding a model.
    """
    if reports or checkpoint is None:
        return report_model(checkpoint)
    from m3fm.generation import load

    return load(checkpoint)


def report_model(checkpoint: Path | None):
    """The report model in `checkpoint`, or the bundled default."""
    from m3fm.generation.reporting import ReportModel, is_report_model
    from m3fm.models import default_model_dir

    if checkpoint is None:
        checkpoint = default_model_dir()
    elif not is_report_model(checkpoint):
        raise UsageError(
            f"--checkpoint {checkpoint}: not a report model (an alignment checkpoint cannot "
            "write reports; train a `generate` recipe)"
        )
    return ReportModel.from_pretrained(checkpoint)
