"""Tiny settings for report-generation tests: a generator that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import yaml
from alignment_fixtures import TINY_MODEL

from m3fm.recipes import load_recipe

TINY_GENERATOR = [
    "model.hidden_size=32",
    "model.prefix_tokens=2",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "model.max_length=48",
    "data.batch_size=4",
    "decode.max_new_tokens=24",
    "train.warmup_steps=0",
    "train.eval_every=0",
    "train.save_every=0",
]
"""`--set` overrides that shrink a shipped generate recipe."""


def write_tiny_align_recipe(path: Path, steps: int = 4) -> Path:
    """cov-ctr-align shrunk by the tiny settings, as a recipe file a generate recipe can name."""
    overrides = dict(pair.split("=", 1) for pair in TINY_MODEL)
    recipe = load_recipe("cov-ctr-align", overrides | {"train.max_steps": str(steps)})
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True))
    return path


def tiny_generator_args(*extra: str) -> list[str]:
    """`--set` arguments: the tiny generator plus `extra` key=value pairs."""
    pairs = (*TINY_GENERATOR, *extra)
    return [arg for pair in pairs for arg in ("--set", pair)]
