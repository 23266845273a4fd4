"""What `m3fm run` computes for many input files: reports, label probabilities, or both.

Inputs are loaded, embedded and decoded in batches, one result per input.  An input that
cannot be read becomes a result with its error at once; the others go on, so a batch job
never loses finished work to one bad file.  Inputs are taken lazily and loaded ahead (in
worker processes with ``workers``), so memory holds about one batch whatever their number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from m3fm.data.streaming import preprocessed
from m3fm.diagnosis.validation import Validation, read_validation
from m3fm.diagnosis.zeroshot import PromptClassifier, as_mapping, combine, resolve_labels
from m3fm.embedding import Embedder
from m3fm.generation.config import DecodeConfig
from m3fm.generation.reporting import ReportModel
from m3fm.models import default_model_dir
from m3fm.registry import M3fmError, ModalitySpec, UsageError, get_registry


@dataclass(frozen=True)
class Analysis:
    """What to compute per input: a report (when `report`) and the probabilities of `labels`
    read from `diagnosis_from` (image, report or combined; no diagnosis when `labels` is
    empty).  With the model's `validation` figures, each result lists the labels they do not
    vouch for (``unvalidated``)."""

    modality: str
    lang: str
    report: bool = True
    labels: tuple[str, ...] = ()
    diagnosis_from: str = "image"
    validation: Validation | None = None


def requested_analysis(
    modality: str, lang: str, labels: Sequence[str] | None = None, *, report: bool = True,
    diagnosis: bool = True, diagnosis_from: str = "image",
    validation: Validation | None = None,
) -> Analysis:
    """The Analysis a user asked for by name (`labels` None: every label of the modality),
    checked against the installed plugins before a model loads or an input is read, so that
    an unknown modality, language or label is one UsageError naming the known ones.
    `validation`: the figures the model ships (:func:`model_validation`)."""
    registry = get_registry()
    registry.modality(modality)
    registry.language(lang)
    chosen = resolve_labels(modality, labels) if diagnosis else ()
    return Analysis(modality, lang, report=report, labels=tuple(chosen),
                    diagnosis_from=diagnosis_from,
                    validation=validation)


def model_validation(model_dir: Path | None) -> Validation | None:
    """The diagnosis figures the model in `model_dir` (None: the bundled one) ships, if any."""
    return read_validation(model_dir or default_model_dir())


def split_labels(labels: str | None) -> list[str] | None:
    """Labels given as ``a,b`` (``--labels``, a form field); None when not given."""
    return None if labels is None else [label.strip() for label in labels.split(",") if label]


ResultHook = Callable[[dict[str, object], torch.Tensor], None]
"""Called with each finished result and its preprocessed input, before the result is yielded:
what writes per-input files (:class:`m3fm.clinical.outputs.ClinicalOutputs`) and notes them in
the result."""


def analyse_inputs(
    model: Embedder, inputs: Iterable[Path], analysis: Analysis,
    decode: DecodeConfig | None = None, workers: int = 0, on_result: ResultHook | None = None,
) -> Iterator[dict[str, object]]:
    """Yield ``{"input", "modality", "language", "report"?, "findings"?, "diagnosis"?,
    "prompt_languages"?, "unvalidated"?, "ood"?, "ood_score"?, "ood_threshold"?}`` or
    ``{"input", "error"}`` per input: an error as soon as the input fails to load, the others
    a batch (``decode.batch_size``) at a time, in input order; `workers` processes load the
    inputs ahead (0: this process, when asked).

    ``findings``: what the report states, coded by the language plugin's extractor (label,
    present, side, lobe), the same in every language.  ``prompt_languages``: per label, the
    language of the prompts it was scored with.  ``unvalidated``: the labels the model's
    validation figures do not vouch for.  ``ood``: whether the image lies outside what the
    model was trained on (models that store a description of their training images).
    `on_result` sees each result and its preprocessed input before it is yielded.

    Everything that would fail for every input (a modality, language or label the model
    lacks; a report asked of an alignment-only model) is refused here, before any input is read.
    """
    modality = model.modality(analysis.modality)
    needs_reports = analysis.report or (
        bool(analysis.labels) and analysis.diagnosis_from != "image")
    if needs_reports:
        if not isinstance(model, ReportModel):
            raise UsageError("an alignment-only model cannot write reports; train a `generate` "
                             "recipe, or ask for image-based diagnosis only")
        model.generator.language_id(analysis.lang)
    classifier = None
    if analysis.labels:
        labels = resolve_labels(modality, analysis.labels)
        classifier = PromptClassifier(model, labels, model.language(analysis.lang))
    decode = decode or getattr(model, "decode", DecodeConfig())
    batches = input_batches(get_registry().modality(modality), inputs, decode.batch_size,
                            workers)
    return _results(model, batches, analysis, modality, classifier, decode, needs_reports,
                    on_result)


def input_batches(
    spec: ModalitySpec, inputs: Iterable[Path], size: int, workers: int = 0,
) -> Iterator[dict[str, object] | list[tuple[Path, torch.Tensor]]]:
    """Preprocessed inputs `size` at a time, as ``[(path, tensor), ...]``; an input that
    fails is yielded at once as its result ``{"input", "error"}``, not after its batch."""
    batch: list[tuple[Path, torch.Tensor]] = []
    for path, loaded in preprocessed(spec, inputs, workers=workers):
        if isinstance(loaded, M3fmError):
            yield {"input": str(path), "error": str(loaded)}
            continue
        batch.append((path, loaded))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _results(
    model: Embedder, batches: Iterable[dict | list[tuple[Path, torch.Tensor]]],
    analysis: Analysis, modality: str, classifier: PromptClassifier | None,
    decode: DecodeConfig, needs_reports: bool, on_result: ResultHook | None,
) -> Iterator[dict[str, object]]:
    extract_findings = get_registry().language(analysis.lang).extract_findings
    detector = getattr(model, "ood", None)
    for batch in batches:
        if isinstance(batch, dict):
            yield batch
            continue
        images = [image for _, image in batch]
        if detector is not None:  # the tower once: its features for the flag, then embeddings
            features = model.image_features(images, modality=modality)
            assessments = detector.assess(modality, features)
            embeddings = model.embed_features(features, modality)
        else:
            assessments, embeddings = [], model.embed_images(images, modality=modality)
        reports = (model.reports_from_embeddings(embeddings, analysis.lang, decode,
                                                 modality=modality)
                   if needs_reports else [None] * len(batch))
        diagnoses = (_diagnoses(classifier, analysis.diagnosis_from, embeddings, reports)
                     if classifier is not None else [None] * len(batch))
        for (path, image), report, diagnosis, assessment in zip(
                batch, reports, diagnoses, assessments or [{}] * len(batch), strict=True):
            result: dict[str, object] = {"input": str(path), "modality": modality,
                                         "language": analysis.lang}
            if analysis.report:
                result["report"] = report
                if extract_findings is not None:
                    result["findings"] = [finding.model_dump(mode="json")
                                          for finding in extract_findings(report)]
            if diagnosis is not None:
                result["diagnosis"] = diagnosis
                result["prompt_languages"] = dict(classifier.prompt_languages)
                if analysis.validation is not None:
                    result["unvalidated"] = analysis.validation.unvalidated(
                        modality, analysis.lang, classifier.labels)
            result.update(assessment)
            if on_result is not None:
                on_result(result, image)
            yield result


def _diagnoses(classifier: PromptClassifier, source: str, embeddings, reports) -> list[dict]:
    if source == "image":
        scores = classifier.probabilities(embeddings)
    elif source == "report":
        scores = classifier.report_probabilities(reports)
    else:
        scores = combine(classifier.probabilities(embeddings),
                         classifier.report_probabilities(reports))
    return [as_mapping(classifier.labels, row) for row in scores]
