"""Report-generation evaluation: models and baselines scored the same way on one split.

Every system writes one report per image of each (modality, language) set of the split (the
split's images with a reference report in that language, as in retrieval).  Scores are the
language-overlap metrics (:mod:`m3fm.metrics.language`) and the finding-level
clinical-efficacy scores (:mod:`m3fm.metrics.clinical`): on templated report corpora a
system is better only if it wins on both.

Baselines, computed from the training split:

* ``most-frequent``: the most frequent training report of the language, for every image;
* ``random-same-label``: a random training report whose record has the image's labels
  (COVID-19 or not on COV-CTR) — it knows the diagnosis and nothing else;
* ``nearest-report``: the training report of the language nearest to the image in the
  shared space (retrieval instead of generation), with the first model's alignment.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from m3fm.alignment.retrieval import RetrievalSet, retrieval_sets
from m3fm.data.cache import PreprocessCache
from m3fm.embedding import Embedder
from m3fm.generation.config import DecodeConfig
from m3fm.metrics.clinical import clinical_scores
from m3fm.metrics.language import METRIC_NAMES, most_frequent_report, report_scores
from m3fm.registry import MissingDataError, Record, UsageError, get_registry

if TYPE_CHECKING:
    from m3fm.generation.reporting import ReportModel

CLINICAL_METRICS = ("CE-P", "CE-R", "CE-F1", "CE-F1-positive")
REPORT_METRICS = (*METRIC_NAMES, *CLINICAL_METRICS)
"""Columns of a report-evaluation row, in table order."""

BASELINES = ("most-frequent", "random-same-label", "nearest-report")


def score_reports(
    hypotheses: Sequence[str], references: Sequence[str], language: str,
    reference_language: str | None = None, written_references: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """Overlap and clinical-efficacy scores, keyed by :data:`REPORT_METRICS`.

    `references` are in `reference_language` (default: `language`, the hypotheses'). Clinical
    scores compare findings, which are language-neutral, so they work across languages; they
    are None when either language's plugin has no finding extractor (optional in the API).
    Overlap scores need references in the hypotheses' own language: `references` when the
    languages agree, else `written_references` (None: no overlap scores).
    """
    registry = get_registry()
    spec = registry.language(language)
    reference_spec = registry.language(reference_language or language)
    if spec.extract_findings is None or reference_spec.extract_findings is None:
        clinical = dict.fromkeys(CLINICAL_METRICS)
    else:
        clinical = clinical_scores(hypotheses, references, spec, reference_spec)
    same = references if reference_spec.code == spec.code else written_references
    overlap = (dict.fromkeys(METRIC_NAMES) if same is None
               else report_scores(hypotheses, same, spec))
    return overlap | {name: clinical[name] for name in CLINICAL_METRICS}


def generate_for_sets(
    reporter: ReportModel, sets: Sequence[RetrievalSet], decode: DecodeConfig | None = None, *,
    cache: PreprocessCache | None = None, workers: int = 0, language: str | None = None,
) -> Iterator[tuple[RetrievalSet, list[str]]]:
    """Each set with a generated report per image, in `language` (default: the set's own);
    images are read a batch at a time (in `workers` processes), through the preprocessing
    `cache` when given."""
    for subset in sets:
        embeddings = reporter.embed_images(subset.images, modality=subset.modality,
                                           workers=workers, cache=cache)
        yield subset, reporter.reports_from_embeddings(
            embeddings, language or subset.language, decode, modality=subset.modality
        )


@dataclass
class ReportEvaluation:
    """Scores (one row per set and system) and the reports behind them."""

    rows: list[dict[str, object]] = field(default_factory=list)
    reports: list[dict[str, object]] = field(default_factory=list)
    """One entry per image and set: image, reference and each system's report."""

    def add(self, subset: RetrievalSet, system: str, hypotheses: list[str],
            language: str | None = None,
            written_references: Sequence[str] | None = None) -> None:
        """Score `hypotheses`, written in `language` (default: the set's), against the set's
        references; `written_references` (in `language`) allow overlap scores across."""
        language = language or subset.language
        scores = score_reports(hypotheses, subset.texts, language, subset.language,
                               written_references)
        self.rows.append({"modality": subset.modality, "language": language,
                          "reference_language": subset.language, "system": system,
                          "n": len(hypotheses), "distinct": len(set(hypotheses)), **scores})
        entries = [e for e in self.reports
                   if e["modality"] == subset.modality and e["language"] == language]
        if not entries:
            entries = [{"modality": subset.modality, "language": language,
                        "reference_language": subset.language, "image": str(image),
                        "reference": reference, "reports": {}}
                       for image, reference in zip(subset.images, subset.texts, strict=True)]
            self.reports += entries
        for entry, hypothesis in zip(entries, hypotheses, strict=True):
            entry["reports"][system] = hypothesis


def evaluate_report_models(
    models: dict[str, ReportModel], records: Sequence[Record], *, split: str,
    languages: Sequence[str] | None = None, baselines: bool = True,
    train_split: str = "train", decode: DecodeConfig | None = None, seed: int = 0,
    reference_language: str | None = None,
) -> ReportEvaluation:
    """Score each named model, then the baselines, on every set of `split`.

    Sets are the split's images of the first model's modalities with references in
    `languages` (default: every language some model writes); each model is scored on the
    sets of the languages it writes.  With `reference_language` R, `languages` is one language
    L: reports are written in L for the images that have R references and held to them by
    their findings (clinical efficacy), which lets a language without image–report pairs of
    its own be scored; overlap scores come only where every image has an L reference too.
    """
    if not models:
        raise UsageError("give at least one model to evaluate")
    first = next(iter(models.values()))
    written = {lang for model in models.values() for lang in model.report_languages}
    languages = tuple(languages or sorted(written))
    unwritten = set(languages) - written
    if unwritten:
        raise UsageError(f"no given model writes {', '.join(sorted(unwritten))}; they write "
                         f"{', '.join(sorted(written))}")
    across = reference_language is not None and tuple(languages) != (reference_language,)
    if across and len(languages) != 1:
        raise UsageError("scoring against references in another language takes one report "
                         f"language; got {', '.join(languages)}")
    references = (reference_language,) if across else languages
    sets = retrieval_sets(records, split=split, modalities=first.modalities,
                          languages=references)
    if not sets:
        raise MissingDataError(
            f"split {split!r} has no images of {', '.join(first.modalities)} with reports in "
            f"{', '.join(references)}"
        )
    language = languages[0] if across else None
    own = _own_references(records, split, first.modalities, language) if across else {}
    result = ReportEvaluation()
    cache = PreprocessCache.resolve()  # each image is read once, whatever the number of models
    for name, model in models.items():
        if across and language not in model.report_languages:
            continue
        mine = sets if across else [s for s in sets if s.language in model.report_languages]
        for subset, reports in generate_for_sets(model, mine, decode, cache=cache,
                                                 language=language):
            result.add(subset, name, reports, language, _written(subset, own))
    if baselines:
        train = [r for r in records if r.split == train_split and r.report.strip()]
        for subset in sets:
            for name, reports in baseline_reports(subset, train, records, first, cache, seed,
                                                  language):
                result.add(subset, name, reports, language, _written(subset, own))
    result.rows.sort(key=lambda row: (row["modality"], row["language"]))  # models, then baselines
    return result


def _own_references(records: Sequence[Record], split: str, modalities: Sequence[str],
                    language: str) -> dict[str, str]:
    """Image → its reference in `language`, for overlap scores of reports across languages."""
    return {str(image): text
            for subset in retrieval_sets(records, split=split, modalities=modalities,
                                         languages=[language])
            for image, text in zip(subset.images, subset.texts, strict=True)}


def _written(subset: RetrievalSet, own: dict[str, str]) -> list[str] | None:
    """The set's references in the written language, when every image has one."""
    texts = [own.get(str(image)) for image in subset.images]
    return None if not own or None in texts else texts


def baseline_reports(
    subset: RetrievalSet, train: Sequence[Record], records: Sequence[Record],
    embedder: Embedder, cache: PreprocessCache | None, seed: int, written: str | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """The three baselines' reports for one set (see the module docstring), in `written`
    (default: the set's language)."""
    written = written or subset.language
    language = get_registry().language(written)
    candidates = [r for r in train if r.language == written]
    if not candidates:
        raise MissingDataError(f"the training split has no {written!r} reports for baselines")
    texts = [language.normalize(r.report) for r in candidates]
    yield "most-frequent", [most_frequent_report(texts, language)] * len(subset.images)

    labels_of = {r.image: r.labels for r in records if r.image is not None}
    rng = random.Random(seed)
    same_label = []
    for image in subset.images:
        pool = [t for t, r in zip(texts, candidates, strict=True)
                if r.labels == labels_of.get(image, {})] or texts
        same_label.append(rng.choice(pool))
    yield "random-same-label", same_label

    unique = sorted(set(texts))
    image_vectors = embedder.embed_images(subset.images, modality=subset.modality, cache=cache)
    text_vectors = embedder.embed_texts(unique, lang=written)
    nearest = (image_vectors @ text_vectors.T).argmax(dim=1)
    yield "nearest-report", [unique[i] for i in nearest.tolist()]
