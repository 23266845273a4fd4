"""Training pairs for alignment, and the deterministic batch plan of every epoch.

From the records of any data sets it builds image–report pairs (anchor language only, unless
the supervised image–other-language term is on) and anchor–other parallel report pairs (two
records sharing a ``group``).  Pairs name their image file; images are read only when a step
needs them (in the alignment task's loader workers), so the pairs of a corpus far larger than
memory cost a few hundred bytes each.

Every batch holds one modality (and one report language), so the contrastive negatives of an
image are images of its own domain.  The plan of an epoch depends only on (seed, epoch), so
every rank of a distributed run and a resumed run see exactly the same sequence.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from m3fm.alignment.config import Positives
from m3fm.registry import Finding, LanguageSpec, M3fmError, Record, UsageError, get_registry


@dataclass(frozen=True)
class ImageReport:
    """An image and one of its reports (normalised)."""

    image: Path
    modality: str
    language: str
    text: str
    meaning: int | None = None
    """The report's meaning id (see :func:`meaning_id`); None when only pairs are positives."""


@dataclass(frozen=True)
class ParallelReports:
    """The anchor-language report of an image and its translation into another language."""

    anchor: str
    other: str
    language: str
    meaning: int | None = None
    """The meaning id of the anchor report, which both sides share in the pivot term."""


def meaning_id(
    text: str, positives: Positives,
    extract: Callable[[str], list[Finding]] | None = None,
) -> int | None:
    """A stable 63-bit id of what a normalised report says; reports with equal ids are
    positives of each other in the contrastive loss (``loss.positives``).

    ``same-text`` hashes the text; ``same-findings`` hashes the sorted set of findings
    (label, present, side, lobe) that `extract` reads, falling back to the text when there is
    no extractor or it finds nothing.  A BLAKE2 hash, not Python's salted ``hash()``, so
    every process, loader worker and resumed run computes the same id.  None for ``pairs``.
    """
    if positives == "pairs":
        return None
    key = b"text\0" + text.encode()
    if positives == "same-findings" and extract is not None:
        findings = sorted({(f.label, f.present, f.side or "", f.lobe or "")
                           for f in extract(text)})
        if findings:
            key = b"findings\0" + json.dumps(findings).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def _meanings(languages: Sequence[str], positives: Positives) -> Callable[[str, str], int | None]:
    """`meaning_id` of (language, normalised text), computed once per distinct report."""
    registry = get_registry()
    extractors = {code: registry.language(code).extract_findings for code in languages}
    cache: dict[tuple[str, str], int | None] = {}

    def meaning(language: str, text: str) -> int | None:
        if (language, text) not in cache:
            cache[language, text] = meaning_id(text, positives, extractors[language])
        return cache[language, text]

    return meaning


def anchor_language(languages: Sequence[str]) -> LanguageSpec:
    """The one language every other configured language pivots through (English)."""
    registry = get_registry()
    specs = [registry.language(code) for code in languages]
    anchors = [spec for spec in specs if spec.pivot is None]
    if len(anchors) != 1:
        found = ", ".join(spec.code for spec in anchors) or "none"
        raise UsageError(f"configure exactly one anchor language (pivot none); found: {found}")
    for spec in specs:
        if spec.pivot not in (None, anchors[0].code):
            raise UsageError(
                f"language {spec.code!r} pivots through {spec.pivot!r}, which is not the anchor "
                f"{anchors[0].code!r}; chained pivots are not supported"
            )
    return anchors[0]


@dataclass
class AlignmentPairs:
    """The pairs of one split; images stay in their files until a step reads them."""

    image_reports: list[ImageReport]
    parallel: list[ParallelReports]

    @classmethod
    def from_records(
        cls, records: Sequence[Record], *, split: str, modalities: Sequence[str],
        languages: Sequence[str], image_other_language: bool = False,
        plugin_sentences: bool = False, positives: Positives = "pairs",
    ) -> AlignmentPairs:
        """Pairs of `split` for the configured modalities and languages.

        With `plugin_sentences`, the sentence pairs the language plugins ship join the
        parallel reports of the data.  Unless `positives` is ``pairs``, each pair carries the
        :func:`meaning_id` of its (anchor) report.
        """
        registry = get_registry()
        anchor = anchor_language(languages).code
        normalize = {code: registry.language(code).normalize for code in languages}
        meaning = _meanings(languages, positives)
        chosen = [r for r in records if r.split == split and r.language in languages]
        image_reports = []
        for r in chosen:
            if (r.image is not None and r.modality in modalities and r.report.strip()
                    and (r.language == anchor or image_other_language)):
                text = normalize[r.language](r.report)
                image_reports.append(ImageReport(r.image, r.modality, r.language, text,
                                                 meaning(r.language, text)))
        parallel = _parallel_reports(chosen, anchor, normalize)
        if plugin_sentences:
            parallel += _plugin_sentences(languages, anchor, normalize)
        if positives != "pairs":
            parallel = [replace(pair, meaning=meaning(anchor, pair.anchor)) for pair in parallel]
        for modality in modalities:
            if not any(pair.modality == modality for pair in image_reports):
                raise M3fmError(
                    f"no {modality} image–report pairs in split {split!r}: the data hold no "
                    f"{modality} images with {anchor} reports"
                )
        return cls(image_reports, parallel)


def _parallel_reports(records, anchor: str, normalize) -> list[ParallelReports]:
    by_group: dict[str, dict[str, Record]] = defaultdict(dict)
    for record in records:
        if record.group is not None and record.report.strip():
            by_group[record.group].setdefault(record.language, record)
    return [
        ParallelReports(normalize[anchor](group[anchor].report),
                        normalize[language](record.report), language)
        for group in by_group.values() if anchor in group
        for language, record in sorted(group.items()) if language != anchor
    ]


def _plugin_sentences(languages, anchor: str, normalize) -> list[ParallelReports]:
    registry = get_registry()
    return [
        ParallelReports(normalize[anchor](source), normalize[code](translation), code)
        for code in languages if code != anchor
        for source, translation in registry.language(code).parallel_sentences
    ]


@dataclass(frozen=True)
class Step:
    """One optimiser step's share of this rank: image–report pairs and parallel pairs."""

    modality: str
    image_reports: tuple[int, ...]
    parallel: tuple[int, ...]


def plan_epoch(
    pairs: AlignmentPairs, *, epoch: int, seed: int, batch_size: int,
    parallel_batch_size: int | None = None, rank: int = 0, world_size: int = 1,
) -> list[Step]:
    """This rank's steps of one epoch; a function of (seed, epoch) only, so ranks agree.

    Each (modality, language)'s pairs are shuffled and cut into global batches of ``batch_size``
    (dropping the remainder, so every rank gets equal slices); the batches of all modalities
    are then shuffled together, and each step also takes the next ``parallel_batch_size``
    (default: ``batch_size``) of the shuffled, cycled parallel pairs.
    """
    parallel_batch_size = parallel_batch_size or batch_size
    for name, size in (("batch_size", batch_size), ("parallel_batch_size", parallel_batch_size)):
        if size % world_size:
            raise UsageError(f"{name} {size} must be divisible by the {world_size} processes")
    parallel_share = parallel_batch_size // world_size
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    # One modality and one report language per batch: an image's reports in two languages
    # (supervised setting) must not be each other's negatives.
    by_kind: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs.image_reports):
        by_kind[pair.modality, pair.language].append(index)
    batches = []
    for modality, language in sorted(by_kind):
        indices = by_kind[modality, language]
        order = torch.randperm(len(indices), generator=generator).tolist()
        size = min(batch_size, len(indices) - len(indices) % world_size)
        if size == 0:  # fewer pairs than processes: this modality cannot be split evenly
            continue
        for start in range(0, len(order) - size + 1, size):
            batches.append((modality, [indices[i] for i in order[start:start + size]]))
    batch_order = torch.randperm(len(batches), generator=generator).tolist()
    parallel_order = torch.randperm(len(pairs.parallel), generator=generator).tolist()
    steps, cursor = [], 0
    for index in batch_order:
        modality, members = batches[index]
        share = len(members) // world_size
        parallel = []
        if parallel_order:
            parallel = [
                parallel_order[(cursor + i) % len(parallel_order)]
                for i in range(rank * parallel_share, (rank + 1) * parallel_share)
            ]
            cursor += parallel_batch_size
        steps.append(Step(
            modality, tuple(members[rank * share:(rank + 1) * share]), tuple(parallel)
        ))
    return steps
