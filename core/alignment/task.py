"""Stage 1 as a training task: data, model, loss and evaluation for the generic loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.ops import roi_align

from m3fm.alignment.data import AlignmentPairs, Step, plan_epoch
from m3fm.alignment.losses import contrastive_loss, distillation_loss
from m3fm.alignment.model import MultiMedCLIP
from m3fm.alignment.retrieval import evaluate_retrieval, retrieval_sets
from m3fm.data import read_sources
from m3fm.embedding import Embedder
from m3fm.recipes import AlignRecipe
from m3fm.tokenizer import load_tokenizer, train_tokenizer
from m3fm.training import LazyBatches, TrainingTask, seed_everything

log = logging.getLogger(__name__)

CROP_SCALE = (0.8, 1.0)
"""Side of a random training crop, as a fraction of the image side."""


@dataclass
class StepBatch:
    """The tensors of one step, built from a :class:`Step` when the loop asks for it."""

    modality: str
    images: torch.Tensor
    reports: dict[str, torch.Tensor]
    anchors: dict[str, torch.Tensor] | None
    others: dict[str, torch.Tensor] | None


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
            plugin_sentences=recipe.data.plugin_sentences,
        )
        if self.pairs.skipped_images:
            log.warning("%d training images could not be read and were skipped",
                        len(self.pairs.skipped_images))
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
        self._val_images: dict[Path, torch.Tensor] = {}

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
                "pairs": {"image_reports": len(self.pairs.image_reports),
                          "parallel": len(self.pairs.parallel),
                          "skipped_images": len(self.pairs.skipped_images)},
            },
        )

    def batches(self, epoch: int) -> LazyBatches[Step, StepBatch]:
        steps = plan_epoch(
            self.pairs, epoch=epoch, seed=self.recipe.train.seed,
            batch_size=self.recipe.data.batch_size,
            parallel_batch_size=self.recipe.data.parallel_batch_size,
            rank=self.rank, world_size=self.world_size,
        )
        return LazyBatches(steps, epoch, self.collate)

    def collate(self, step: Step, seed: tuple[int, int]) -> StepBatch:
        """Images (randomly cropped when augmenting) and token batches of one step."""
        pairs = [self.pairs.image_reports[i] for i in step.image_reports]
        images = torch.stack([self.pairs.images[pair.image] for pair in pairs])
        if self.recipe.data.augment and images.ndim == 4:
            epoch, index = seed
            generator = torch.Generator().manual_seed(
                ((self.recipe.train.seed * 1_000_003 + epoch) * 1_000_003 + index) * 64 + self.rank
            )
            images = random_crops(images, generator)
        parallel = [self.pairs.parallel[i] for i in step.parallel]
        tokenize = self.model.tokenize
        return StepBatch(
            modality=step.modality,
            images=images,
            reports=tokenize([pair.text for pair in pairs]),
            anchors=tokenize([p.anchor for p in parallel]) if parallel else None,
            others=tokenize([p.other for p in parallel]) if parallel else None,
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
        image_text = contrastive_loss(out["image"], out["reports"], out["logit_scale"])
        logs = {f"loss_image_text_{batch.modality}": image_text.item(),
                "logit_scale": out["logit_scale"].item()}
        total = image_text
        if batch.anchors is not None:
            if self.recipe.loss.pivot == "contrastive":
                pivot = contrastive_loss(out["others"], out["anchors"], out["logit_scale"])
            else:
                pivot = distillation_loss(out["others"], out["anchors"])
            logs["loss_pivot"] = pivot.item()
            total = total + self.recipe.loss.pivot_weight * pivot
        return total, logs

    @torch.no_grad()
    def evaluate(self, model: MultiMedCLIP) -> dict[str, float]:
        """Retrieval recall@k on the validation split, flattened for the metrics log."""
        embedder = Embedder(model, device=next(model.parameters()).device)
        rows = evaluate_retrieval(self.val_sets, embedder, images=self._val_images)
        return {
            f"{row['modality']}/{row['language']}/{row['direction']}/{metric}": row[metric]
            for row in rows for metric in ("R@1", "R@5", "R@10", "median_rank")
        }


def random_crops(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random square crop per image (side CROP_SCALE of the image), resized back."""
    count, _, height, width = images.shape
    low, high = CROP_SCALE
    scale = low + (high - low) * torch.rand(count, generator=generator)
    sides = scale * min(height, width)
    x0 = torch.rand(count, generator=generator) * (width - sides)
    y0 = torch.rand(count, generator=generator) * (height - sides)
    boxes = torch.stack([torch.arange(count, dtype=torch.float), x0, y0, x0 + sides, y0 + sides], 1)
    return roi_align(images, boxes, output_size=(height, width), aligned=True)
