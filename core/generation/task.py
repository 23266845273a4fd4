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
from m3fm.data import read_sources
from m3fm.embedding import Embedder
from m3fm.generation.bridge import MemoryBank
from m3fm.generation.evaluation import generate_for_sets, score_reports
from m3fm.generation.model import MultiMedLM
from m3fm.generation.reporting import ReportModel, ReportModelConfig, save_report_artifacts
from m3fm.imaging import preprocess
from m3fm.recipes import GenerateRecipe
from m3fm.registry import ConfigError, M3fmError, Record, get_registry
from m3fm.training import LazyBatches, TrainingTask, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training target: a normalised report and the point of the space it is written from."""

    language: str
    report: str
    embedding: torch.Tensor
    from_text: bool
    """Text embeddings get noise in training; image embeddings are used as they are."""
    modality: str | None = None
    """The imaging domain the report describes, when its data set says."""


@dataclass
class GeneratorBatch:
    embeddings: torch.Tensor
    language_ids: torch.Tensor
    labels: torch.Tensor


class GenerationTask:
    """Everything stage 2 needs, built from a recipe, a data folder and an alignment model."""

    def __init__(self, recipe: GenerateRecipe, data_dir: Path, align_dir: Path, *,
                 rank: int = 0, world_size: int = 1) -> None:
        self.recipe, self.rank, self.world_size = recipe, rank, world_size
        self.align = MultiMedCLIP.from_pretrained(align_dir).requires_grad_(False)
        languages = recipe.model.languages
        unknown = sorted(set(languages) - set(self.align.config.languages))
        if unknown:
            raise ConfigError(
                f"{align_dir}: the alignment model has no {', '.join(unknown)} text; it has "
                f"{', '.join(self.align.config.languages)}"
            )
        records = read_sources(recipe.data.sources, data_dir)
        embedder = Embedder(self.align, device="cpu")
        self.examples = self._text_examples(records, embedder)
        if recipe.data.image_pairs > 0:
            self.examples += self._image_examples(records, embedder)
        self.bank = memory_bank(self.examples)
        seed_everything(recipe.train.seed)
        self.model = MultiMedLM(recipe.model, self.align.config.embed_dim, self.align.tokenizer)
        self.val_sets = retrieval_sets(
            records, split=recipe.data.val_split, modalities=self.align.config.modalities,
            languages=languages,
        )
        self._val_images: dict[Path, torch.Tensor] = {}

    def _text_examples(self, records: list[Record], embedder: Embedder) -> list[Example]:
        examples = []
        for language in self.recipe.model.languages:
            normalize = get_registry().language(language).normalize
            chosen = [(normalize(r.report), r.modality) for r in records
                      if r.split == self.recipe.data.train_split and r.language == language]
            chosen = [(report, modality) for report, modality in chosen if report.strip()]
            if not chosen:
                raise ConfigError(
                    f"no {language!r} reports in split {self.recipe.data.train_split!r} of the "
                    "recipe's data sources"
                )
            vectors = embedder.embed_texts([report for report, _ in chosen], lang=language)
            examples += [Example(language, report, vector, True, modality)
                         for (report, modality), vector in zip(chosen, vectors, strict=True)]
        return examples

    def _image_examples(self, records: list[Record], embedder: Embedder) -> list[Example]:
        """A seeded `image_pairs` share of the training images, with their reports."""
        sets = retrieval_sets(
            records, split=self.recipe.data.train_split,
            modalities=self.align.config.modalities, languages=self.recipe.model.languages,
        )
        examples = []
        for pairs in sets:
            order = list(range(len(pairs.images)))
            random.Random(self.recipe.train.seed).shuffle(order)
            chosen = order[:max(1, round(self.recipe.data.image_pairs * len(order)))]
            spec = get_registry().modality(pairs.modality)
            normalize = get_registry().language(pairs.language).normalize
            images, kept = [], []
            for index in chosen:
                try:
                    images.append(preprocess(spec, pairs.images[index]))
                    kept.append(index)
                except M3fmError as exc:
                    log.warning("skipped training image: %s", exc)
            vectors = embedder.embed_images(images, modality=pairs.modality)  # batched
            examples += [
                Example(pairs.language, normalize(pairs.texts[index]), vector, False,
                        pairs.modality)
                for index, vector in zip(kept, vectors, strict=True)
            ]
        log.info("%d image–report pairs train the generator", len(examples))
        return examples

    def training_task(self, data_description: str, align_dir: Path) -> TrainingTask:
        """The task the generic training loop runs."""
        config = ReportModelConfig(generator=self.recipe.model, decode=self.recipe.decode)
        counts = {language: sum(e.language == language for e in self.examples)
                  for language in self.recipe.model.languages}
        return TrainingTask(
            model=self.model,
            batches=self.batches,
            loss=self.loss,
            evaluate=self.evaluate if self.val_sets else None,
            save_artifacts=lambda d: save_report_artifacts(d, self.align, config, self.bank),
            metadata={
                "recipe": self.recipe.model_dump(mode="json"),
                "data": data_description,
                "align": str(align_dir),
                "train_split": self.recipe.data.train_split,
                "val_split": self.recipe.data.val_split,
                "examples": counts,
                "image_examples": sum(not e.from_text for e in self.examples),
            },
        )

    def batches(self, epoch: int) -> LazyBatches[list[int], GeneratorBatch]:
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
        return LazyBatches(batches, epoch, self.collate)

    def collate(self, indices: list[int], seed: tuple[int, int]) -> GeneratorBatch:
        """Embeddings (text ones with seeded noise), language ids and target labels."""
        examples = [self.examples[i] for i in indices]
        epoch, index = seed
        generator = torch.Generator().manual_seed(
            ((self.recipe.train.seed * 1_000_003 + epoch) * 1_000_003 + index) * 64 + self.rank
        )
        embeddings = torch.stack([e.embedding for e in examples])
        noise = torch.randn(embeddings.shape, generator=generator) * self.recipe.model.noise_std
        from_text = torch.tensor([e.from_text for e in examples]).unsqueeze(1)
        languages = self.recipe.model.languages
        return GeneratorBatch(
            embeddings=embeddings + noise * from_text,
            language_ids=torch.tensor([languages.index(e.language) for e in examples]),
            labels=self.model.tokenize_targets([e.report for e in examples]),
        )

    def loss(self, model: torch.nn.Module, batch: GeneratorBatch) -> tuple[torch.Tensor, dict]:
        return model(batch.embeddings, batch.language_ids, batch.labels), {}

    @torch.no_grad()
    def evaluate(self, model: MultiMedLM) -> dict[str, float]:
        """BLEU-4, CIDEr-D and clinical-efficacy F1 of val images' reports (default decoding)."""
        reporter = ReportModel(self.align, model, self.bank, self.recipe.decode,
                               device=next(model.parameters()).device)
        metrics = {}
        for pairs, reports in generate_for_sets(reporter, self.val_sets, self._val_images):
            scores = score_reports(reports, list(pairs.texts), pairs.language)
            for name in ("BLEU-4", "CIDEr-D", "CE-F1", "CE-F1-positive"):
                if scores[name] is not None:  # no clinical scores without an extractor
                    metrics[f"{pairs.modality}/{pairs.language}/{name}"] = scores[name]
        return metrics


def memory_bank(examples: list[Example]) -> MemoryBank:
    """The text examples' embeddings by language, and by modality and language."""
    groups: dict[str, list[torch.Tensor]] = {}
    for example in examples:
        if example.from_text:
            groups.setdefault(example.language, []).append(example.embedding)
            if example.modality is not None:
                key = f"{example.modality}/{example.language}"
                groups.setdefault(key, []).append(example.embedding)
    return MemoryBank({key: torch.stack(vectors) for key, vectors in groups.items()})
