"""Which of a model's diagnosis labels were checked against data, and how well.

A modality declares many labels (the X-ray plugin the 14 ChestX-ray14 findings and COVID-19),
but a model trained on the shared data can only be measured on the few those data label.  A
packaged model therefore ships ``validation.json``: the zero-shot AUC of each (modality,
language, label) measured on a held-out split.  A label without a figure of at least
:data:`MIN_AUC` there was not shown to work, and `m3fm run` marks its probability
*unvalidated* instead of presenting it as meaningful.  A model without the file (one a user
trained) makes no claim either way, and nothing is marked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from m3fm.registry import InputError

VALIDATION_FILE = "validation.json"
"""File of a model directory holding its measured diagnosis figures."""

MIN_AUC = 0.6
"""Zero-shot AUC a label must reach on the held-out split to count as validated: clearly
above chance (0.5) on the few dozen images the shared data hold per label."""

MEASURED_METHOD = "zero-shot image"
"""The diagnosis method `m3fm run` uses by default, hence the one a label is validated by."""


@dataclass(frozen=True)
class Validation:
    """The zero-shot diagnosis figures of one model on a held-out split."""

    split: str
    rows: tuple[dict, ...]
    """``{"modality", "language", "label", "auc", "n", "positives"}`` per measured triple."""

    def auc(self, modality: str, language: str, label: str) -> float | None:
        """The measured AUC of `label` for `modality` images with `language` prompts."""
        return next((row["auc"] for row in self.rows if (row["modality"], row["language"],
                     row["label"]) == (modality, language, label)), None)

    def unvalidated(self, modality: str, language: str, labels: Iterable[str]) -> list[str]:
        """The `labels` that were not measured, or measured below :data:`MIN_AUC`."""
        return [label for label in labels
                if (auc := self.auc(modality, language, label)) is None or auc < MIN_AUC]

    @classmethod
    def from_diagnosis_rows(cls, rows: Sequence[dict], split: str) -> Validation:
        """The figures in rows of `m3fm evaluate --task diagnosis --out` (every method's;
        only the zero-shot image rows with an AUC are kept)."""
        kept = tuple(
            {key: row[key] for key in ("modality", "language", "label", "auc", "n",
                                       "positives")}
            for row in rows if row.get("method") == MEASURED_METHOD and row.get("auc") is not None
        )
        return cls(split, kept)

    def write(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / VALIDATION_FILE
        path.write_text(json.dumps({"split": self.split, "rows": list(self.rows)}, indent=1,
                                   ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def read_validation(model_dir: str | Path) -> Validation | None:
    """The model's figures, or None when it ships none; a damaged file is an InputError."""
    path = Path(model_dir) / VALIDATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Validation(str(data["split"]), tuple(dict(row) for row in data["rows"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a validation file ({exc})") from None
