"""Embedding API: images and reports into the shared space of a trained alignment model.

    import m3fm
    model = m3fm.load("runs/align/final")
    images = model.embed_images(["scan.png"], modality="ct")
    reports = model.embed_texts(["右肺下叶可见磨玻璃影。"], lang="zh")
    similarity = images @ reports.T

Vectors are L2-normalised, computed in batches without gradients, returned on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from m3fm.alignment.model import MAX_LOGIT_SCALE, MultiMedCLIP
from m3fm.data.streaming import preprocessed
from m3fm.registry import UsageError, get_registry

if TYPE_CHECKING:
    from m3fm.clinical.ood import OODDetector
    from m3fm.data.cache import PreprocessCache


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU with bf16, or a CPU with AMX
    or AVX512-BF16 (elsewhere oneDNN emulates bf16, far slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolved_precision(precision: str, device: torch.device) -> str:
    """What `precision` (a DecodeConfig's) means on `device`: `auto` becomes `bf16-images`
    where bf16 is native, else `fp32`; the others stay as they are."""
    if precision == "auto":
        return "bf16-images" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16-images", "bf16"):
        raise ValueError(f"precision must be auto, fp32, bf16-images or bf16, got {precision!r}")
    return precision


def autocast_dtype(precision: str, device: torch.device, part: str = "images"
                   ) -> torch.dtype | None:
    """The autocast dtype of `part` (``images``: the image tower; ``decoder``: the report
    generator) in `precision` on `device`; None: plain fp32."""
    resolved = resolved_precision(precision, device)
    if resolved == "bf16" or (resolved == "bf16-images" and part == "images"):
        return torch.bfloat16
    return None


def computing_in(precision: str, device: torch.device, part: str = "images"
                 ) -> contextlib.AbstractContextManager:
    """A context that runs `part` (``images`` or ``decoder``) in `precision` on `device`."""
    dtype = autocast_dtype(precision, device, part)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def channels_last(model: MultiMedCLIP) -> MultiMedCLIP:
    """`model` with its image towers' weights in channels-last layout, which oneDNN's
    convolutions run faster (about 30% on the bundled resnet10t); for inference only."""
    model.image_encoders.to(memory_format=torch.channels_last)
    return model


class Embedder:
    """A loaded alignment model with batching, normalisation of text and image loading."""

    def __init__(self, model: MultiMedCLIP, device: str | torch.device | None = None,
                 ood: OODDetector | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.ood = ood
        """What the checkpoint knows of its training images, to flag inputs far from them
        (see :meth:`image_features`); None for a checkpoint without it."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.config.modalities

    @property
    def languages(self) -> tuple[str, ...]:
        return self.model.config.languages

    @property
    def logit_scale(self) -> float:
        """The learnt inverse temperature of the space, which calibrates similarity softmaxes."""
        return self.model.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE).item()

    def modality(self, modality: str | None) -> str:
        """The modality to embed images as: `modality` if the model has it, else the only one."""
        if modality is None:
            if len(self.modalities) != 1:
                raise UsageError(f"name the modality; this model has {', '.join(self.modalities)}")
            return self.modalities[0]
        if modality not in self.modalities:
            raise UsageError(
                f"this model has no {modality!r} image tower; it has {', '.join(self.modalities)}"
            )
        return modality

    def language(self, lang: str) -> str:
        """`lang` if the model's text tower was trained on it, else a UsageError naming them."""
        if lang not in self.languages:
            raise UsageError(f"this model was not trained on {lang!r}; it knows "
                             f"{', '.join(self.languages)}")
        return lang

    @torch.no_grad()
    def embed_images(
        self, images: Sequence[str | Path | torch.Tensor], modality: str | None = None,
        batch_size: int = 32, *, workers: int = 0, cache: PreprocessCache | None = None,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Embeddings (N, D) of image files or already preprocessed tensors of one modality,
        computed in `precision` (see :class:`~m3fm.generation.config.DecodeConfig`).

        Files are read a batch ahead (in `workers` processes, through `cache` when given) and
        only about a batch of images is held at a time; the first file that cannot be read
        raises its InputError.  Inputs of different shapes (2D slices beside 3D volumes,
        volumes of different depth) are batched by shape; the rows come back in input order.
        """
        modality = self.modality(modality)
        return self._encode_images(images, modality, self.model.encode_image,
                                   self.model.config.embed_dim, batch_size, workers, cache,
                                   precision)

    @torch.no_grad()
    def image_features(
        self, images: Sequence[str | Path | torch.Tensor], modality: str | None = None,
        batch_size: int = 32, *, workers: int = 0, cache: PreprocessCache | None = None,
    ) -> torch.Tensor:
        """The image tower's pooled features (N, F), before the projection into the shared
        space, in fp32: what :attr:`ood` assesses, because they keep how an image looks,
        which the space (made to match what reports say) drops."""
        modality = self.modality(modality)
        dim = self.model.image_projections[modality].in_features
        return self._encode_images(images, modality, self.model.image_features, dim,
                                   batch_size, workers, cache, "fp32")

    @torch.no_grad()
    def embed_features(self, features: torch.Tensor, modality: str | None = None
                       ) -> torch.Tensor:
        """Embeddings (N, D) of image-tower features (N, F) from :meth:`image_features`: the
        projection alone, so that a caller needing both (the OOD flag) runs the tower once."""
        modality = self.modality(modality)
        return self.model.project_image(modality, features.to(self.device)).float().cpu()

    def _encode_images(
        self, images: Sequence[str | Path | torch.Tensor], modality: str,
        encode_batch: Callable[[str, torch.Tensor], torch.Tensor], dim: int, batch_size: int,
        workers: int, cache: PreprocessCache | None, precision: str,
    ) -> torch.Tensor:
        spec = get_registry().modality(modality)
        files = preprocessed(spec, (Path(image) for image in images
                                    if not isinstance(image, torch.Tensor)),
                             workers=workers, cache=cache)
        out = torch.empty(len(images), dim)
        waiting: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}

        def encode(group: list[tuple[int, torch.Tensor]]) -> None:
            rows = [index for index, _ in group]
            batch = torch.stack([tensor for _, tensor in group]).to(self.device)
            with computing_in(precision, self.device):
                out[rows] = encode_batch(modality, batch).float().cpu()
            group.clear()

        for index, image in enumerate(images):
            if not isinstance(image, torch.Tensor):
                _, image = next(files)
                if isinstance(image, Exception):
                    raise image
            group = waiting.setdefault(tuple(image.shape), [])
            group.append((index, image))
            if len(group) == batch_size:
                encode(group)
        for group in waiting.values():
            if group:
                encode(group)
        return out

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], lang: str, batch_size: int = 64) -> torch.Tensor:
        """Embeddings (N, D) of reports in language `lang`, normalised by its plugin first."""
        normalize = get_registry().language(self.language(lang)).normalize
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.model.tokenize([normalize(t) for t in texts[start:start + batch_size]])
            tokens = {name: value.to(self.device) for name, value in tokens.items()}
            out.append(self.model.encode_text(**tokens).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.model.config.embed_dim)

