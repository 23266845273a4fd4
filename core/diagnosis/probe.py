"""Few-shot and supervised diagnosis: a linear probe on frozen image embeddings.

The probe is scikit-learn's logistic regression with balanced class weights, trained on k
labelled images per class (or a percentage of each class), repeated over seeds because with
one or five examples the draw matters more than the method; results are a mean and a spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3fm.registry import MissingDataError, UsageError

SHOTS = ("1", "5", "10", "10%", "100%")
"""Labelled training examples per class: a count, or a percentage of each class."""


def check_shots(shots: str) -> str:
    """`shots` if it is a positive count (``5``) or a percentage in (0, 100] (``10%``)."""
    try:
        value = float(shots[:-1]) if shots.endswith("%") else int(shots)
    except ValueError:
        value = 0
    if value <= 0 or (shots.endswith("%") and value > 100):
        raise UsageError(f"shots must be a count like 5 or a percentage like 10%, got {shots!r}")
    return shots


def sample_shots(labels: np.ndarray, shots: str, seed: int) -> np.ndarray:
    """Indices of a seeded draw of `shots` examples of each class (at least one of each)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        percent = shots.endswith("%")
        count = round(len(members) * float(shots[:-1]) / 100) if percent else int(shots)
        chosen.append(rng.choice(members, size=min(max(count, 1), len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def fit_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A balanced logistic-regression probe fitted on `features` (N, D) and 0/1 `labels`."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labels)) < 2:
        raise MissingDataError("a probe needs training images of both classes; the training split "
                         f"has only class {int(labels[0])}")
    probe = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    return probe.fit(features, labels)


def probe_draws(
    train_x: np.ndarray, train_y: np.ndarray, shots: str, seeds: Sequence[int],
) -> list:
    """One fitted probe per seed, each on its own draw of `shots` examples per class.

    With 100% every draw is the whole training set, so one probe stands for all seeds.
    """
    if shots == "100%":
        seeds = seeds[:1]
    probes = []
    for seed in seeds:
        chosen = sample_shots(train_y, shots, seed)
        probes.append(fit_probe(train_x[chosen], train_y[chosen], seed))
    return probes
