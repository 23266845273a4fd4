"""Diagnosis evaluation on one split: zero-shot, report-based, combined, probes and baselines.

Every method scores the images of the evaluation split and of a tuning split; AUC is read
from the scores alone, F1 and accuracy at the threshold that maximises F1 on the tuning split
(``val``, or ``train`` when ``val`` is the split being evaluated), so no method sees the labels
of the images it is judged on.  Probes and the CNN learn from the ``train`` split.

Methods:

* ``zero-shot image`` / ``zero-shot report`` / ``zero-shot combined``, per prompt language:
  the image embedding, the embedding of the report the model wrote for it, or their mean,
  against the label's prompts (:mod:`m3fm.diagnosis.zeroshot`);
* ``probe N`` (few-shot): a linear probe on the frozen image embeddings from N examples per
  class, over several seeds (mean ± std); ``supervised probe`` is the one on all of train;
* baselines: ``chance`` (scikit-learn's prior classifier: a constant score) and ``small CNN``,
  a network trained from scratch on the same labelled training images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from m3fm.diagnosis.metrics import binary_metrics, choose_threshold
from m3fm.diagnosis.probe import SHOTS, probe_draws
from m3fm.diagnosis.zeroshot import PromptClassifier, combine, resolve_labels
from m3fm.embedding import Embedder
from m3fm.imaging import preprocess
from m3fm.progress import track
from m3fm.registry import MissingDataError, Record, UsageError, get_registry

if TYPE_CHECKING:
    from m3fm.generation.reporting import ReportModel

TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class LabelledImages:
    """The distinct images of one modality in a split that carry a known value of `label`."""

    split: str
    modality: str
    label: str
    paths: tuple[Path, ...]
    targets: np.ndarray


@dataclass
class SplitScores:
    """One method's scores on the evaluation and the tuning split."""

    evaluation: np.ndarray
    tuning: np.ndarray


@dataclass
class DiagnosisEvaluation:
    """Rows for tables and JSON, and the evaluation split's labels and scores for ROC plots."""

    rows: list[dict[str, object]] = field(default_factory=list)
    few_shot: list[dict[str, object]] = field(default_factory=list)
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)


def tuning_split(split: str) -> str:
    """Where thresholds are chosen: ``val``, or ``train`` when ``val`` itself is evaluated."""
    if split == TRAIN_SPLIT:
        raise UsageError("probes learn from the train split; evaluate diagnosis on another split")
    return TRAIN_SPLIT if split == "val" else "val"


def recorded_label(modality: str, records: Sequence[Record]) -> str:
    """The modality's first declared label that the records carry (else its first label):
    what to diagnose when the user names none."""
    known = {name for r in records if r.modality == modality for name in r.labels}
    declared = resolve_labels(modality, None)
    return next((name for name in declared if name in known), declared[0])


def labelled_images(
    records: Sequence[Record], *, split: str, modality: str, label: str,
    limit: int | None = None,
) -> LabelledImages:
    """The split's images of `modality` with `label` known, each once (sorted by path);
    `limit` keeps at most that many of each class, for quick runs."""
    targets: dict[Path, int] = {}
    for record in records:
        if (record.split == split and record.modality == modality and record.image is not None
                and label in record.labels):
            targets.setdefault(record.image, record.labels[label])
    if not targets:
        raise MissingDataError(f"split {split!r} has no {modality} images labelled {label!r}")
    paths = sorted(targets)
    if limit is not None:
        kept = {0: 0, 1: 0}
        chosen = []
        for path in paths:
            if kept[targets[path]] < limit:
                kept[targets[path]] += 1
                chosen.append(path)
        paths = chosen
    return LabelledImages(split, modality, label, tuple(paths),
                          np.array([targets[p] for p in paths], dtype=int))


def evaluate_diagnosis(
    model: Embedder, records: Sequence[Record], *, modality: str, label: str, split: str,
    languages: Sequence[str] | None = None, reporters: Mapping[str, ReportModel] | None = None,
    shots: Sequence[str] = SHOTS, seeds: Sequence[int] = range(5), cnn_epochs: int = 0,
    limit: int | None = None,
) -> DiagnosisEvaluation:
    """Every method of the module docstring for one label of one modality on `split`.

    Prompts are scored in `languages` (default: all of the model's).  Report-based rows come
    from `reporters` (language → report model on the same alignment; default: `model` itself
    for the languages it writes).  The CNN baseline runs when `cnn_epochs` > 0.
    """
    modality = model.modality(modality)
    resolve_labels(modality, [label])
    languages = [model.language(lang) for lang in languages or model.languages]
    if reporters is None:
        reporters = {lang: model for lang in getattr(model, "report_languages", ())}
    run = _Run(model, records, modality, label, split, limit)
    for lang in languages:
        run.zero_shot(lang, reporters.get(lang))
    for setting in shots:
        run.probe(setting, list(seeds))
    run.chance()
    if cnn_epochs > 0:
        run.small_cnn(cnn_epochs)
    return run.result


class _Run:
    """One evaluation's images, embeddings and results, shared by every method."""

    def __init__(self, model: Embedder, records: Sequence[Record], modality: str, label: str,
                 split: str, limit: int | None) -> None:
        self.model, self.modality, self.label = model, modality, label
        self.split, self.tuning_split = split, tuning_split(split)
        self.sets = {name: labelled_images(records, split=name, modality=modality, label=label,
                                           limit=limit)
                     for name in dict.fromkeys([split, self.tuning_split, TRAIN_SPLIT])}
        self.tensors = _load(modality, [images.paths for images in self.sets.values()])
        self.embedded = {
            name: model.embed_images([self.tensors[p] for p in images.paths], modality=modality)
            for name, images in self.sets.items()
        }
        self.features = {name: vectors.numpy() for name, vectors in self.embedded.items()}
        self.result = DiagnosisEvaluation()
        self.context = {"modality": modality, "label": label, "split": split}

    @property
    def targets(self) -> list[int]:
        return self.sets[self.split].targets.tolist()

    def scored(self, score: Callable[[str], object]) -> SplitScores:
        """`score(split_name)`, probabilities of shape (N,) or (N, 1), on both splits."""
        def flat(name: str) -> np.ndarray:
            return np.asarray(score(name)).reshape(-1)

        return SplitScores(flat(self.split), flat(self.tuning_split))

    def measure(self, scores: SplitScores) -> dict[str, object]:
        tuning = self.sets[self.tuning_split].targets.tolist()
        threshold = choose_threshold(tuning, scores.tuning.tolist())
        return binary_metrics(self.targets, scores.evaluation.tolist(), threshold)

    def add(self, method: str, language: str, scores: SplitScores) -> None:
        self.result.rows.append({**self.context, "method": method, "language": language,
                                 **self.measure(scores)})
        name = f"{method} ({language})" if language != "-" else method
        self.result.curves[name] = (self.targets, scores.evaluation.tolist())

    def zero_shot(self, lang: str, reporter: ReportModel | None) -> None:
        classifier = PromptClassifier(self.model, [self.label], lang)
        used = classifier.prompt_languages[self.label]
        # A language without prompts for the label is scored with the anchor language's: the
        # rows say so, e.g. "es (en prompts)".
        shown = lang if used == lang else f"{lang} ({used} prompts)"
        image = self.scored(lambda name: classifier.probabilities(self.embedded[name]))
        self.add("zero-shot image", shown, image)
        if reporter is None:
            return

        def from_reports(name: str) -> torch.Tensor:
            embedded = self.embedded[name] if reporter is self.model else reporter.embed_images(
                [self.tensors[p] for p in self.sets[name].paths], modality=self.modality)
            reports = reporter.reports_from_embeddings(embedded, lang, modality=self.modality)
            return classifier.report_probabilities(reports)

        report = self.scored(from_reports)
        self.add("zero-shot report", shown, report)
        self.add("zero-shot combined", shown, SplitScores(
            combine(image.evaluation, report.evaluation), combine(image.tuning, report.tuning)))

    def probe(self, setting: str, seeds: list[int]) -> None:
        """A few-shot row (mean ± std over seeds); at 100% also the supervised probe's row."""
        train = self.sets[TRAIN_SPLIT]
        draws = []
        for probe in probe_draws(self.features[TRAIN_SPLIT], train.targets, setting, seeds):
            scores = self.scored(
                lambda name, probe=probe: probe.predict_proba(self.features[name])[:, 1])
            draws.append(self.measure(scores))
        self.result.few_shot.append({**self.context, "shots": setting, "draws": len(draws),
                                     **_mean_std(draws)})
        if setting == "100%":
            self.add("supervised probe", "-", scores)

    def chance(self) -> None:
        """scikit-learn's prior classifier: the training prevalence as every image's score."""
        from sklearn.dummy import DummyClassifier

        train = self.sets[TRAIN_SPLIT].targets
        dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(train), 1)), train)
        self.add("chance", "-", self.scored(lambda name: dummy.predict_proba(
            np.zeros((len(self.sets[name].paths), 1)))[:, -1]))

    def small_cnn(self, epochs: int) -> None:
        from m3fm.diagnosis.cnn import train_small_cnn

        def stack(name: str) -> torch.Tensor:
            return torch.stack([self.tensors[p] for p in self.sets[name].paths])

        train = self.sets[TRAIN_SPLIT]
        scores = train_small_cnn(stack(TRAIN_SPLIT), train.targets.tolist(),
                                 torch.cat([stack(self.split), stack(self.tuning_split)]),
                                 epochs=epochs)
        cut = len(self.sets[self.split].paths)
        self.add("small CNN", "-", SplitScores(scores[:cut], scores[cut:]))


def _load(modality: str, groups: Sequence[Sequence[Path]]) -> dict[Path, torch.Tensor]:
    """Each image preprocessed once, however many splits or methods use it."""
    spec = get_registry().modality(modality)
    paths = list(dict.fromkeys(path for group in groups for path in group))
    return {path: preprocess(spec, path) for path in track(paths, "reading images")}


def _mean_std(draws: list[dict]) -> dict[str, float | None]:
    summary: dict[str, float | None] = {}
    for metric in ("auc", "f1", "accuracy"):
        values = [d[metric] for d in draws if d[metric] is not None]
        summary[f"{metric}_mean"] = float(np.mean(values)) if values else None
        summary[f"{metric}_std"] = float(np.std(values)) if values else None
    return summary
