"""Binary diagnosis metrics and their plots, computed by scikit-learn and drawn by matplotlib.

Two rules keep the numbers honest:

* A decision threshold is chosen on a tuning split (:func:`choose_threshold`) and then applied
  unchanged to the test split (:func:`binary_metrics`); choosing it on the test split would
  flatter F1 and accuracy.
* AUC is undefined when a split has only one class.  It is then reported as ``None`` with a
  note, never as 0.5 or 1.0, while F1 and accuracy are still computed.

Plots use matplotlib's object API (``Figure`` + ``savefig``), never ``pyplot``, so no global
state or GUI backend is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

AUC_UNDEFINED_NOTE = "AUC undefined: the split has only one class"


def _single_class(y_true: Sequence[int]) -> bool:
    return len(np.unique(np.asarray(y_true))) < 2


def choose_threshold(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold that maximises F1 on tuning data (0.5 when it has one class).

    Predictions are ``scores >= threshold``, as in :func:`binary_metrics`.
    """
    if _single_class(y_true):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(
        np.asarray(y_true), np.asarray(scores, dtype=float)
    )
    # The last precision/recall pair (recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros_like(denominator),
        where=denominator > 0,
    )
    return float(thresholds[int(np.argmax(f1))])


def binary_metrics(
    y_true: Sequence[int], scores: Sequence[float], threshold: float
) -> dict[str, object]:
    """AUC, F1 and accuracy of ``scores >= threshold``, as plain JSON-serialisable values."""
    labels = np.asarray(y_true).astype(int)
    values = np.asarray(scores, dtype=float)
    predicted = (values >= threshold).astype(int)
    result: dict[str, object] = {
        "n": int(labels.size),
        "positives": int((labels == 1).sum()),
        "auc": None if _single_class(labels) else float(roc_auc_score(labels, values)),
        "f1": float(f1_score(labels, predicted, labels=[0, 1], zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "threshold": float(threshold),
    }
    if result["auc"] is None:
        result["note"] = AUC_UNDEFINED_NOTE
    return result


def _new_figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.5), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure: Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")


def plot_roc(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str, path: Path
) -> None:
    """Write one PNG with a ROC line per system; systems whose labels have one class are skipped."""
    figure, axes = _new_figure()
    drawn = 0
    for name, (y_true, scores) in curves.items():
        if _single_class(y_true):
            continue
        false_pos, true_pos, _ = roc_curve(np.asarray(y_true), np.asarray(scores, dtype=float))
        auc = roc_auc_score(np.asarray(y_true), np.asarray(scores, dtype=float))
        axes.plot(false_pos, true_pos, label=f"{name} (AUC {auc:.2f})")
        drawn += 1
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if drawn == 0:
        axes.text(
            0.5,
            0.5,
            "ROC undefined: the labels have only one class",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate",
        ylabel="True positive rate",
        title=title,
    )
    axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)


def plot_few_shot(
    points: Sequence[Mapping], references: Mapping[str, float], title: str, path: Path
) -> None:
    """Write one PNG of mean AUC (± std) against shot settings, with reference lines.

    ``points`` are rows ``{"shots", "auc_mean", "auc_std"}`` in display order; rows without a
    mean AUC are skipped.  ``references`` are drawn as labelled horizontal dashed lines.
    """
    figure, axes = _new_figure()
    rows = [row for row in points if row.get("auc_mean") is not None]
    if rows:
        positions = list(range(len(rows)))
        means = [float(row["auc_mean"]) for row in rows]
        stds = [float(row.get("auc_std") or 0.0) for row in rows]
        axes.errorbar(positions, means, yerr=stds, marker="o", capsize=4, label="few-shot")
        axes.set_xticks(positions, [str(row["shots"]) for row in rows])
    else:
        axes.text(
            0.5,
            0.5,
            "no few-shot AUC to plot",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    for index, (name, value) in enumerate(references.items()):
        axes.axhline(float(value), linestyle="--", linewidth=1, color=f"C{index + 1}", label=name)
    axes.set(xlabel="Labelled training images (shots)", ylabel="AUC", title=title)
    axes.set_ylim(0, 1.02)
    if rows or references:
        axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)
