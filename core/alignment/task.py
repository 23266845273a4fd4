"""Stage 1 as a training task: data, model, loss and evaluation for the generic loop."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from m3fm.alignment.data import AlignmentPairs, Step, plan_epoch
from m3fm.alignment.losses import contrastive_loss, distillation_loss
from m3fm.alignment.model import MultiMedCLIP
from m3fm.alignment.retrieval import evaluate_retrieval, retrieval_sets
from m3fm.data import read_sources
from m3fm.data.cache import PreprocessCache
from m3fm.data.streaming import load_image, preprocessed
from m3fm.embedding import Embedder
from m3fm.imaging import random_crop
from m3fm.recipes import AlignRecipe
from m3fm.registry import M3fmError, get_registry
from m3fm.tokenizer import load_tokenizer, train_tokenizer
from m3fm.training import (
    LoaderSettings,
    PlannedBatches,
    PlannedLoader,
    TrainingTask,
    seed_everything,
)

log = logging.getLogger(__name__)

@dataclass
class StepImages:
    """What a loader worker makes of one step: its images, and the ones it could not read."""

    images: torch.Tensor
    failed: tuple[tuple[int, str, str], ...]
    """(position in the step, image file, error) of each image that could not be read; its
    row of `images` is a placeholder."""


@dataclass
class StepBatch:
    """The tensors of one step, built from a :class:`Step` when the loop asks for it."""

    modality: str
    images: torch.Tensor
    reports: dict[str, torch.Tensor]
    valid: torch.Tensor | None
    """Which rows hold a real image; None when all do."""
    anchors: dict[str, torch.Tensor] | None
    others: dict[str, torch.Tensor] | None
    meaning: torch.Tensor | None = None
    """Meaning id (int64) of each report; rows with equal ids are positives of each other.
    None: one positive per row (``loss.positives = "pairs"``)."""
    parallel_meaning: torch.Tensor | None = None
    """Meaning id of each parallel pair's anchor report, shared by both its sides."""


class AlignmentTask:
    """Everything stage 1 needs, built from a recipe and a data folder."""

    def __init__(self, recipe: AlignRecipe, data_dir: Path, *, rank: int = 0,
                 world_size: int = 1) -> None:
        self.recipe, self.rank, self.world_size = recipe, rank, world_size
        config = recipe.model
        records = read_sources(recipe.data.sources, data_dir)
        self.pairs = AlignmentPairs.from_records(
            records, split=recipe.data.train_split, modalities=config.modalities,
            languages=config.languages, image_other_language=recipe.loss.image_other_language,
            plugin_sentences=recipe.data.plugin_sentences, positives=recipe.loss.positives,
        )
        tokenizer = (
            load_tokenizer(config.text.pretrained) if config.text.pretrained
            else train_tokenizer(self._training_texts(), vocab_size=config.text.vocab_size)
        )
        seed_everything(recipe.train.seed)  # the same initial weights in every run and rank
        self.model = MultiMedCLIP(config, tokenizer)
        self.val_sets = retrieval_sets(
            records, split=recipe.data.val_split, modalities=config.modalities,
            languages=config.languages,
        )
        self.cache = PreprocessCache.resolve(recipe.data.cache_dir)
        self.skipped: dict[str, str] = {}
        """Training images that could not be read so far, with their errors."""
        self.loader = PlannedLoader(
            self.load_images, self.collate,
            LoaderSettings(workers=recipe.data.workers, prefetch=recipe.data.prefetch),
            load_alone=functools.partial(self.load_images, alone=True),
        )
        self._counts = {"image_reports": len(self.pairs.image_reports),
                        "parallel": len(self.pairs.parallel), "skipped_images": 0}

    def _training_texts(self) -> list[str]:
        texts = [pair.text for pair in self.pairs.image_reports]
        for pair in self.pairs.parallel:
            texts += [pair.anchor, pair.other]
        return texts

    def training_task(self, data_description: str) -> TrainingTask:
        """The task the generic training loop runs."""
        return TrainingTask(
            model=self.model,
            batches=self.batches,
            loss=self.loss,
            evaluate=self.evaluate if self.val_sets else None,
            save_artifacts=self.model.save_config,
            # A step trains one modality's tower only, and the text pooler is never used.
            find_unused_parameters=True,
            metadata={
                "recipe": self.recipe.model_dump(mode="json"),
                "data": data_description,
                "train_split": self.recipe.data.train_split,
                "val_split": self.recipe.data.val_split,
                "pairs": self._counts,  # live: each checkpoint records the skips so far
            },
        )

    def batches(self, epoch: int) -> PlannedBatches[Step, StepBatch]:
        steps = plan_epoch(
            self.pairs, epoch=epoch, seed=self.recipe.train.seed,
            batch_size=self.recipe.data.batch_size,
            parallel_batch_size=self.recipe.data.parallel_batch_size,
            rank=self.rank, world_size=self.world_size,
        )
        return self.loader.epoch(steps, epoch)

    def load_images(self, step: Step, place: tuple[int, int], alone: bool = False) -> StepImages:
        """The step's images (augmented when the recipe says so), read in a loader worker, or
        with `alone` each in a process of its own (after a worker died on this step).

        An image that cannot be read keeps its row as a placeholder (zeros: the mean image
        after standardisation) that the loss leaves out, so every rank of a distributed run
        still holds batches of one shape.  Augmenting uses the modality's own `augment` (plugin
        API 1.6), or a random crop of 2D images for a modality that declares none; each draws
        from a generator seeded by (seed, epoch, step, pair), so it is the same with any number
        of workers and in a resumed run.
        """
        spec = get_registry().modality(step.modality)
        images: list[torch.Tensor | None] = []
        failed = []
        for position, index in enumerate(step.image_reports):
            path = self.pairs.image_reports[index].image
            try:
                image = (_read_alone(spec, path, self.cache) if alone
                         else load_image(spec, path, self.cache))
            except M3fmError as exc:
                failed.append((position, str(path), str(exc)))
                images.append(None)
                continue
            if self.recipe.data.augment and spec.augment is not None:
                image = spec.augment(image, self._augmentation(place, index))
            elif self.recipe.data.augment and image.ndim == 3:
                image = random_crop(image, self._augmentation(place, index))
            images.append(image)
        shape = next((image.shape for image in images if image is not None), spec.slice_shape)
        placeholder = torch.zeros(shape)
        return StepImages(torch.stack([placeholder if image is None else image
                                       for image in images]), tuple(failed))

    def _augmentation(self, place: tuple[int, int], pair: int) -> torch.Generator:
        epoch, step = place
        seed = ((self.recipe.train.seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_000_003
        return torch.Generator().manual_seed(seed + pair)

    def collate(self, step: Step, loaded: StepImages) -> StepBatch:
        """The step's batch from its images and token batches of its reports and parallel
        pairs; unreadable images are warned about (once each) and counted."""
        for _, path, error in loaded.failed:
            if path not in self.skipped:
                self.skipped[path] = error
                log.warning("skipping image: %s", error)
        self._counts["skipped_images"] = len(self.skipped)
        valid = None
        if loaded.failed:
            valid = torch.ones(len(step.image_reports), dtype=torch.bool)
            valid[[position for position, _, _ in loaded.failed]] = False
        pairs = [self.pairs.image_reports[i] for i in step.image_reports]
        parallel = [self.pairs.parallel[i] for i in step.parallel]
        tokenize = self.model.tokenize
        return StepBatch(
            modality=step.modality,
            images=loaded.images,
            reports=tokenize([pair.text for pair in pairs]),
            valid=valid,
            anchors=tokenize([p.anchor for p in parallel]) if parallel else None,
            others=tokenize([p.other for p in parallel]) if parallel else None,
            meaning=_meaning_ids(pairs),
            parallel_meaning=_meaning_ids(parallel) if parallel else None,
        )

    def loss(self, model: torch.nn.Module, batch: StepBatch) -> tuple[torch.Tensor, dict]:
        """Image–report InfoNCE plus the weighted pivot term on parallel reports."""
        device = next(model.parameters()).device
        texts = {"reports": batch.reports}
        if batch.anchors is not None:
            texts |= {"anchors": batch.anchors, "others": batch.others}
        texts = {name: {key: value.to(device) for key, value in tokens.items()}
                 for name, tokens in texts.items()}
        out = model(modality=batch.modality, images=batch.images.to(device), **texts)
        valid = None if batch.valid is None else batch.valid.to(device)
        meaning = None if batch.meaning is None else batch.meaning.to(device)
        own_weight = self.recipe.loss.own_pair_weight
        image_text = contrastive_loss(out["image"], out["reports"], out["logit_scale"], valid,
                                      meaning=meaning, own_weight=own_weight)
        logs = {f"loss_image_text_{batch.modality}": image_text.item(),
                "logit_scale": out["logit_scale"].item()}
        total = image_text
        if batch.anchors is not None:
            if self.recipe.loss.pivot == "contrastive":
                parallel_meaning = (None if batch.parallel_meaning is None
                                    else batch.parallel_meaning.to(device))
                pivot = contrastive_loss(out["others"], out["anchors"], out["logit_scale"],
                                         meaning=parallel_meaning, own_weight=own_weight)
            else:
                pivot = distillation_loss(out["others"], out["anchors"])
            logs["loss_pivot"] = pivot.item()
            total = total + self.recipe.loss.pivot_weight * pivot
        return total, logs

    @torch.no_grad()
    def evaluate(self, model: MultiMedCLIP) -> dict[str, float]:
        """Retrieval recall@k on the validation split, flattened for the metrics log."""
        embedder = Embedder(model, device=next(model.parameters()).device)
        rows = evaluate_retrieval(self.val_sets, embedder, cache=self.cache,
                                  workers=self.recipe.data.workers)
        return {
            f"{row['modality']}/{row['language']}/{row['direction']}/{metric}": row[metric]
            for row in rows for metric in ("R@1", "R@5", "R@10", "median_rank")
        }


def _meaning_ids(pairs) -> torch.Tensor | None:
    """The int64 meaning ids of `pairs`, or None when they carry none (``pairs`` mode)."""
    if not pairs or any(pair.meaning is None for pair in pairs):
        return None
    return torch.tensor([pair.meaning for pair in pairs], dtype=torch.int64)


def _read_alone(spec, path: Path, cache: PreprocessCache | None) -> torch.Tensor:
    """`path` preprocessed in a process of its own; an InputError if that process dies."""
    _, image = next(preprocessed(spec, [path], workers=1, cache=cache))
    if isinstance(image, M3fmError):
        raise image
    return image
