"""Tiny settings for report-generation tests: a generator that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from alignment_fixtures import TINY_MODEL, write_cov_ctr

from m3fm.cli import main
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


def train_tiny_report_model(root: Path, steps: int = 6) -> tuple[Path, Path]:
    """(data folder, run folder) of the zero-shot Chinese recipe, shrunk, trained through the
    CLI with its alignment model first (in ``run/align``)."""
    data = write_cov_ctr(root / "data")
    align = write_tiny_align_recipe(root / "tiny-align.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "cov-ctr-zh-zeroshot", "--data", str(data), "--out",
              str(root / "run"),
              *tiny_generator_args(f"align.recipe={align}", f"train.max_steps={steps}",
                                   "train.eval_every=3")])
    assert exit_info.value.code == 0
    return data, root / "run"


def overfit(model, embeddings, labels, steps: int = 150):
    """Train a generator to write `labels` from `embeddings` (language 0) until it has them
    by heart; returns it in eval mode."""
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(embeddings, torch.zeros(len(embeddings), dtype=torch.long), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()
