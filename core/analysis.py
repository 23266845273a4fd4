"""What `m3fm run` computes for many input files: reports, label probabilities, or both.

Inputs are loaded, embedded and decoded in batches, one result per input.  An input that
cannot be read becomes a result with its error at once; the others go on, so a batch job
never loses finished work to one bad file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from m3fm.diagnosis.zeroshot import PromptClassifier, as_mapping, combine, resolve_labels
from m3fm.embedding import Embedder
from m3fm.generation.config import DecodeConfig
from m3fm.generation.reporting import ReportModel
from m3fm.imaging import preprocess
from m3fm.registry import M3fmError, UsageError, get_registry


@dataclass(frozen=True)
class Analysis:
    """What to compute per input: a report (when `report`) and the probabilities of `labels`
    read from `diagnosis_from` (image, report or combined; no diagnosis when `labels` is
    empty)."""

    modality: str
    lang: str
    report: bool = True
    labels: tuple[str, ...] = ()
    diagnosis_from: str = "image"


def analyse_inputs(
    model: Embedder, inputs: Sequence[Path], analysis: Analysis,
    decode: DecodeConfig | None = None,
) -> Iterator[dict[str, object]]:
    """Yield ``{"input", "modality", "language", "report"?, "diagnosis"?}`` or
    ``{"input", "error"}`` per input: an error as soon as the input fails to load, the others
    a batch (``decode.batch_size``) at a time, in input order.

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
    return _results(model, inputs, analysis, modality, classifier, decode, needs_reports)


def _results(
    model: Embedder, inputs: Sequence[Path], analysis: Analysis, modality: str,
    classifier: PromptClassifier | None, decode: DecodeConfig, needs_reports: bool,
) -> Iterator[dict[str, object]]:
    spec = get_registry().modality(modality)
    for start in range(0, len(inputs), decode.batch_size):
        chunk = inputs[start:start + decode.batch_size]
        loaded = {}
        for path in chunk:
            try:
                loaded[path] = preprocess(spec, path)
            except M3fmError as exc:
                yield {"input": str(path), "error": str(exc)}  # at once, not after the batch
        if not loaded:
            continue
        embeddings = model.embed_images(list(loaded.values()), modality=modality)
        reports = (model.reports_from_embeddings(embeddings, analysis.lang, decode,
                                                 modality=modality)
                   if needs_reports else [None] * len(loaded))
        diagnoses = (_diagnoses(classifier, analysis.diagnosis_from, embeddings, reports)
                     if classifier is not None else [None] * len(loaded))
        for path, report, diagnosis in zip(loaded, reports, diagnoses, strict=True):
            result: dict[str, object] = {"input": str(path), "modality": modality,
                                         "language": analysis.lang}
            if analysis.report:
                result["report"] = report
            if diagnosis is not None:
                result["diagnosis"] = diagnosis
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
