"""Diagnosis metrics, plots and the from-scratch CNN baseline, on small hand-made data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from m3fm.diagnosis.cnn import train_small_cnn
from m3fm.diagnosis.metrics import binary_metrics, choose_threshold, plot_few_shot, plot_roc
from m3fm.registry import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_MAGIC


def test_threshold_maximises_f1_on_the_tuning_data():
    y = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]
    threshold = choose_threshold(y, scores)
    # Predicting positive from 0.8 up finds 2 of 3 positives with no false alarm: F1 0.8.
    assert threshold == pytest.approx(0.8)
    best = max(f1_score(y, np.asarray(scores) >= t) for t in scores)
    assert f1_score(y, np.asarray(scores) >= threshold) == pytest.approx(best)


def test_threshold_on_a_single_class_is_one_half():
    assert choose_threshold([1, 1, 1], [0.2, 0.9, 0.4]) == 0.5


def test_binary_metrics_on_a_perfect_separator():
    result = binary_metrics([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9], threshold=0.5)
    assert result == {
        "n": 4,
        "positives": 2,
        "auc": 1.0,
        "f1": 1.0,
        "accuracy": 1.0,
        "threshold": 0.5,
    }
    assert json.loads(json.dumps(result)) == result


def test_binary_metrics_on_a_single_class_split():
    result = binary_metrics([0, 0, 0], np.array([0.1, 0.7, 0.2]), threshold=np.float32(0.5))
    assert result["auc"] is None
    assert result["note"] == "AUC undefined: the split has only one class"
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["f1"] == 0.0
    assert (result["n"], result["positives"]) == (3, 0)
    assert all(type(v) in (int, float, str, type(None)) for v in result.values())
    json.dumps(result)


def test_metrics_module_does_not_import_torch():
    code = "import sys, m3fm.diagnosis.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_roc_writes_a_png(tmp_path):
    path = tmp_path / "nested" / "roc.png"
    plot_roc(
        {
            "m3fm": ([0, 0, 1, 1, 1], [0.1, 0.6, 0.5, 0.8, 0.9]),
            "cnn": ([0, 1, 0, 1, 1], [0.4, 0.6, 0.3, 0.2, 0.9]),
            "one class": ([1, 1], [0.3, 0.7]),
        },
        "ROC",
        path,
    )
    assert _is_png(path)


def test_plot_roc_with_only_single_class_systems_still_writes_a_png(tmp_path):
    path = tmp_path / "roc.png"
    plot_roc({"a": ([0, 0], [0.1, 0.2]), "b": ([1], [0.9])}, "ROC", path)
    assert _is_png(path)


def test_plot_few_shot_writes_a_png(tmp_path):
    points = [
        {"shots": "1", "auc_mean": 0.55, "auc_std": 0.08},
        {"shots": "5", "auc_mean": None, "auc_std": None},
        {"shots": "10", "auc_mean": 0.68, "auc_std": 0.05},
        {"shots": "10%", "auc_mean": 0.77, "auc_std": None},
        {"shots": "100%", "auc_mean": 0.83, "auc_std": 0.0},
    ]
    path = tmp_path / "plots" / "few_shot.png"
    plot_few_shot(points, {"zero-shot image (en)": 0.74, "chance": 0.5}, "Few-shot", path)
    assert _is_png(path)
    empty = tmp_path / "empty.png"
    plot_few_shot([{"shots": "1", "auc_mean": None, "auc_std": None}], {}, "Few-shot", empty)
    assert _is_png(empty)


def _squares(n: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """Noise images; class-1 images carry a bright 8×8 square at a random place."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 32, 32, generator=generator) * 0.3
    labels = [i % 2 for i in range(n)]
    for i, label in enumerate(labels):
        if label:
            y, x = torch.randint(0, 24, (2,), generator=generator).tolist()
            images[i, :, y : y + 8, x : x + 8] += 2.0
    return images, labels


def test_cnn_returns_reproducible_probabilities():
    images, labels = _squares(16, seed=0)
    test_images, _ = _squares(8, seed=1)
    first = train_small_cnn(images, labels, test_images, epochs=2, seed=3, batch_size=8)
    second = train_small_cnn(images, labels, test_images, epochs=2, seed=3, batch_size=8)
    assert first.shape == (8,)
    assert ((first >= 0) & (first <= 1)).all()
    np.testing.assert_allclose(first, second)


def test_cnn_separates_synthetic_classes():
    images, labels = _squares(32, seed=0)
    test_images, test_labels = _squares(24, seed=1)
    probabilities = train_small_cnn(images, labels, test_images, epochs=8, seed=0, batch_size=8)
    assert roc_auc_score(test_labels, probabilities) > 0.8


def test_cnn_refuses_a_single_class():
    images, _ = _squares(4, seed=0)
    with pytest.raises(UsageError, match="only class 1"):
        train_small_cnn(images, [1, 1, 1, 1], images, epochs=1)


def test_cnn_3d_shapes():
    # Batches of 3 leave a last batch of one image, which must be folded in for batch norm.
    generator = torch.Generator().manual_seed(0)
    volumes = torch.randn(4, 1, 16, 16, 16, generator=generator)
    probabilities = train_small_cnn(volumes, [0, 1, 0, 1], volumes[:3], epochs=1, batch_size=3)
    assert probabilities.shape == (3,)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
