"""Stage 2 as a training task: the generator learns to write reports back from their own
(frozen) text embeddings, plus noise — text alone, no image needed.

With ``data.image_pairs`` above 0 (the few-shot and supervised settings) a share of the
training images also teaches it, their embeddings from the frozen image tower paired with
their reports in the target languages; the zero-shot setting leaves it at 0.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from m3fm.alignment.model import MultiMedCLIP
from m3fm.alignment.retrieval import retrieval_sets
from m3fm.clinical.ood import load_for
from m3fm.data import read_sources
from m3fm.data.cache import PreprocessCache
from m3fm.data.streaming import preprocessed
from m3fm.embedding import Embedder
from m3fm.generation.bridge import MemoryBank
from m3fm.generation.evaluation import generate_for_sets, score_reports
from m3fm.generation.model import MultiMedLM
from m3fm.generation.reporting import ReportModel, ReportModelConfig, save_report_artifacts
from m3fm.progress import track
from m3fm.recipes import GenerateRecipe
from m3fm.registry import ConfigError, M3fmError, Record, get_registry
from m3fm.training import (
    LoaderSettings,
    PlannedBatches,
    PlannedLoader,
    TrainingTask,
    seed_everything,
)

log = logging.getLogger(__name__)

IMAGE_CHUNK = 256
"""Training images held at once while their embeddings are computed."""


TEXT_CHUNK = 4096
"""Reports embedded per progress tick; the text tower still runs in its own smaller batches."""


@dataclass
class Examples:
    """The generator's training targets, column by column: each a normalised report and the
    point of the space it is written from.  Columns, not one object per report, keep a corpus
    of 10^6 reports at about its embeddings' size (N × D floats) plus its text."""

    reports: list[str]
    languages: list[str]
    modalities: list[str | None]
    """The imaging domain each report describes, when its data set says."""
    embeddings: torch.Tensor
    from_text: torch.Tensor
    """Text embeddings get noise in training; image embeddings are used as they are."""

    def __len__(self) -> int:
        return len(self.reports)

    def __add__(self, other: Examples) -> Examples:
        return Examples(self.reports + other.reports, self.languages + other.languages,
                        self.modalities + other.modalities,
                        torch.cat([self.embeddings, other.embeddings]),
                        torch.cat([self.from_text, other.from_text]))


@dataclass
class GeneratorBatch:
    embeddings: torch.Tensor
    language_ids: torch.Tensor
    labels: torch.Tensor
    modality_ids: torch.Tensor | None = None
    """Rows' modality tokens (a report of no known modality: the `unknown` one); None for a
    generator without modality tokens."""


class GenerationTask:
    """Everything stage 2 needs, built from a recipe, a data folder and an alignment model."""

    def __init__(self, recipe: GenerateRecipe, data_dir: Path, align_dir: Path, *,
                 rank: int = 0, world_size: int = 1) -> None:
        self.recipe, self.rank, self.world_size = recipe, rank, world_size
        self.align = MultiMedCLIP.from_pretrained(align_dir).requires_grad_(False)
        self.ood = load_for(self.align, align_dir)
        languages = recipe.model.languages
        unknown = sorted(set(languages) - set(self.align.config.languages))
        if unknown:
            raise ConfigError(
                f"{align_dir}: the alignment model has no {', '.join(unknown)} text; it has "
                f"{', '.join(self.align.config.languages)}"
            )
        records = read_sources(recipe.data.sources, data_dir)
        embedder = Embedder(self.align, device="cpu")
        self.cache = PreprocessCache.resolve(recipe.data.cache_dir)
        self.examples = self._text_examples(records, embedder)
        if recipe.data.image_pairs > 0:
            self.examples += self._image_examples(records, embedder)
        self.bank = memory_bank(self.examples, recipe.data.bank_size, recipe.train.seed)
        self.config = recipe.model.generator_config(self.align.config.modalities)
        seed_everything(recipe.train.seed)
        self.model = MultiMedLM(self.config, self.align.config.embed_dim, self.align.tokenizer)
        self.val_sets = retrieval_sets(
            records, split=recipe.data.val_split, modalities=self.align.config.modalities,
            languages=languages,
        )
        self.loader = PlannedLoader(self.collate, _whole, LoaderSettings())

    def _text_examples(self, records: list[Record], embedder: Embedder) -> Examples:
        """Every training report of the generator's languages, embedded a chunk at a time."""
        chosen: list[tuple[str, str, str | None]] = []
        for language in self.recipe.model.languages:
            normalize = get_registry().language(language).normalize
            mine = [(language, normalize(r.report), r.modality) for r in records
                    if r.split == self.recipe.data.train_split and r.language == language]
            mine = [example for example in mine if example[1].strip()]
            if not mine:
                raise ConfigError(
                    f"no {language!r} reports in split {self.recipe.data.train_split!r} of the "
                    "recipe's data sources"
                )
            chosen += mine
        vectors = torch.empty(len(chosen), self.align.config.embed_dim)
        starts = range(0, len(chosen), TEXT_CHUNK)
        for start in track(starts, "embedding training reports", total=len(starts)):
            chunk = chosen[start:start + TEXT_CHUNK]
            for language in dict.fromkeys(language for language, _, _ in chunk):
                rows = [start + i for i, (lang, _, _) in enumerate(chunk) if lang == language]
                vectors[rows] = embedder.embed_texts([chosen[i][1] for i in rows], lang=language)
        return Examples([report for _, report, _ in chosen],
                        [language for language, _, _ in chosen],
                        [modality for _, _, modality in chosen], vectors,
                        torch.ones(len(chosen), dtype=torch.bool))

    def _image_examples(self, records: list[Record], embedder: Embedder) -> Examples:
        """A seeded `image_pairs` share of the training images, with their reports."""
        sets = retrieval_sets(
            records, split=self.recipe.data.train_split,
            modalities=self.align.config.modalities, languages=self.recipe.model.languages,
        )
        reports, languages, modalities, vectors = [], [], [], []
        for pairs in sets:
            order = list(range(len(pairs.images)))
            random.Random(self.recipe.train.seed).shuffle(order)
            chosen = order[:max(1, round(self.recipe.data.image_pairs * len(order)))]
            spec = get_registry().modality(pairs.modality)
            normalize = get_registry().language(pairs.language).normalize
            images, kept = [], []
            loaded = preprocessed(spec, (pairs.images[index] for index in chosen),
                                  workers=self.recipe.data.workers, cache=self.cache)
            for index, (_, image) in zip(chosen, loaded, strict=True):
                if isinstance(image, M3fmError):
                    log.warning("skipped training image: %s", image)
                    continue
                images.append(image)
                kept.append(index)
                if len(images) == IMAGE_CHUNK:
                    vectors.append(embedder.embed_images(images, modality=pairs.modality))
                    images.clear()
            if images:
                vectors.append(embedder.embed_images(images, modality=pairs.modality))
            reports += [normalize(pairs.texts[index]) for index in kept]
            languages += [pairs.language] * len(kept)
            modalities += [pairs.modality] * len(kept)
        log.info("%d image–report pairs train the generator", len(reports))
        embeddings = (torch.cat(vectors) if vectors
                      else torch.empty(0, self.align.config.embed_dim))
        return Examples(reports, languages, modalities, embeddings,
                        torch.zeros(len(reports), dtype=torch.bool))

    def training_task(self, data_description: str, align_dir: Path) -> TrainingTask:
        """The task the generic training loop runs."""
        config = ReportModelConfig(generator=self.config, decode=self.recipe.decode)
        counts = {language: self.examples.languages.count(language)
                  for language in self.recipe.model.languages}
        return TrainingTask(
            model=self.model,
            batches=self.batches,
            loss=self.loss,
            evaluate=self.evaluate if self.val_sets else None,
            save_artifacts=lambda d: save_report_artifacts(d, self.align, config, self.bank,
                                                            self.ood),
            metadata={
                "recipe": self.recipe.model_dump(mode="json"),
                "data": data_description,
                "align": str(align_dir),
                "train_split": self.recipe.data.train_split,
                "val_split": self.recipe.data.val_split,
                "examples": counts,
                "image_examples": int((~self.examples.from_text).sum()),
                "memory_bank": self.bank.sizes,
            },
        )

    def batches(self, epoch: int) -> PlannedBatches[list[int], GeneratorBatch]:
        """Shuffled batches of a function of (seed, epoch); each rank takes its slice."""
        order = list(range(len(self.examples)))
        random.Random(self.recipe.train.seed * 1_000_003 + epoch).shuffle(order)
        size = self.recipe.data.batch_size
        share = size // self.world_size
        batches = [
            order[start + self.rank * share: start + (self.rank + 1) * share]
            for start in range(0, len(order) - size + 1, size)
        ]
        if not batches:
            raise ConfigError(
                f"{len(order)} training examples do not fill one batch of {size}; "
                "lower data.batch_size"
            )
        return self.loader.epoch(batches, epoch)

    def collate(self, indices: list[int], seed: tuple[int, int]) -> GeneratorBatch:
        """Embeddings (text ones with seeded noise), language and modality ids, labels."""
        epoch, index = seed
        generator = torch.Generator().manual_seed(
            ((self.recipe.train.seed * 1_000_003 + epoch) * 1_000_003 + index) * 64 + self.rank
        )
        examples = self.examples
        embeddings = examples.embeddings[indices]
        noise = torch.randn(embeddings.shape, generator=generator) * self.recipe.model.noise_std
        from_text = examples.from_text[indices].unsqueeze(1)
        languages = self.recipe.model.languages
        return GeneratorBatch(
            embeddings=embeddings + noise * from_text,
            language_ids=torch.tensor([languages.index(examples.languages[i]) for i in indices]),
            labels=self.model.tokenize_targets([examples.reports[i] for i in indices]),
            modality_ids=modality_ids(self.config.modalities,
                                      [examples.modalities[i] for i in indices], generator),
        )

    def loss(self, model: torch.nn.Module, batch: GeneratorBatch) -> tuple[torch.Tensor, dict]:
        return model(batch.embeddings, batch.language_ids, batch.labels, batch.modality_ids), {}

    @torch.no_grad()
    def evaluate(self, model: MultiMedLM) -> dict[str, float]:
        """BLEU-4, CIDEr-D and clinical-efficacy F1 of val images' reports (default decoding)."""
        reporter = ReportModel(self.align, model, self.bank, self.recipe.decode,
                               device=next(model.parameters()).device)
        metrics = {}
        for pairs, reports in generate_for_sets(reporter, self.val_sets, cache=self.cache,
                                                workers=self.recipe.data.workers):
            scores = score_reports(reports, list(pairs.texts), pairs.language)
            for name in ("BLEU-4", "CIDEr-D", "CE-F1", "CE-F1-positive"):
                if scores[name] is not None:  # no clinical scores without an extractor
                    metrics[f"{pairs.modality}/{pairs.language}/{name}"] = scores[name]
        return metrics


MODALITY_DROPOUT = 0.2
"""Share of training rows written with the `unknown` modality token, so that the token is
learnt: the generator uses it for a (modality, language) whose reports it never saw (X-ray
reports in Chinese, say, when only Chinese CT reports exist)."""


def modality_ids(known: tuple[str, ...], modalities: list[str | None],
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Modality-token ids of rows of `modalities`, for a generator conditioned on `known`:
    a row whose modality is None or not known gets the extra `unknown` id, ``len(known)``, and
    with `generator` (training) so does a seeded MODALITY_DROPOUT share of the others.
    None when `known` is empty (the generator has no modality tokens)."""
    if not known:
        return None
    ids = torch.tensor([known.index(m) if m in known else len(known) for m in modalities])
    if generator is not None:
        dropped = torch.rand(len(ids), generator=generator) < MODALITY_DROPOUT
        ids = torch.where(dropped, len(known), ids)
    return ids


def memory_bank(examples: Examples, size: int | None = None, seed: int = 0) -> MemoryBank:
    """The text examples' embeddings by language, and by modality and language; at most
    `size` per key, drawn at random with `seed` (the bank is searched for every image)."""
    groups: dict[str, list[int]] = {}
    for row in torch.nonzero(examples.from_text).flatten().tolist():
        language, modality = examples.languages[row], examples.modalities[row]
        groups.setdefault(language, []).append(row)
        if modality is not None:
            groups.setdefault(f"{modality}/{language}", []).append(row)
    generator = torch.Generator().manual_seed(seed)
    for key, rows in groups.items():
        if size is not None and len(rows) > size:
            keep = torch.randperm(len(rows), generator=generator)[:size].sort().values
            groups[key] = [rows[i] for i in keep.tolist()]
    return MemoryBank({key: examples.embeddings[rows] for key, rows in groups.items()})


def _whole(indices: list[int], batch: GeneratorBatch) -> GeneratorBatch:
    """Generator batches are built whole in one go (text only: no worker needed)."""
    return batch
