"""Saliency maps: which pixels of an input push its embedding along a direction of the space.

A target is a direction in the shared space and its score is ``embedding · direction``: a
label's present − absent prompt direction (:func:`label_directions`; the label's log-odds is
this score times the logit scale, so the map explains the zero-shot decision), or a report's
text embedding (the map shows what the image shares with the report).  Two methods:

* ``gradcam`` (default): Grad-CAM on the feature map the image tower pools, i.e. the last
  convolutional stage of any timm CNN.  One forward pass serves every target; each target costs
  a backward pass through the pooling and projection only.
* ``occlusion``: captum's :class:`~captum.attr.Occlusion`, the score drop when a window is set to
  the data set's mean (0 after standardisation); model-agnostic but one forward per window.

Maps come back at the input's own resolution, per slice for volumes, scaled to [0, 1] by the
largest value over the whole input (so slices compare): Grad-CAM keeps positive evidence only,
as it is defined; occlusion is shifted so its least supporting window is 0.

:func:`randomisation_check` is the model parameter randomisation test of Adebayo et al. (2018),
"Sanity checks for saliency maps": maps of the trained model against maps of a copy whose image
tower is freshly initialised.  A map that explains the model changes with its weights (low rank
correlation); one that only echoes the image's edges does not.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from captum.attr import LayerAttribution, Occlusion
from scipy.stats import spearmanr
from torch import nn

from m3fm.alignment.model import MultiMedCLIP
from m3fm.diagnosis.zeroshot import PromptClassifier
from m3fm.embedding import Embedder
from m3fm.registry import UsageError

METHODS = ("gradcam", "occlusion")
DEFAULT_METHOD = "gradcam"
OCCLUSION_WINDOWS = 8
"""Occlusion windows per image side (a window is 1/8 of the side, moved by half a window)."""
OCCLUSION_BATCH = 32
"""Slices per forward pass while occluding."""
MAX_OCCLUSION_SLICES = 16
"""Deepest volume occlusion accepts: it costs depth² × 225 slice forwards (a window position
per slice, each a forward pass of the whole volume)."""
RANDOM_SEED = 0


def label_directions(classifier: PromptClassifier) -> dict[str, torch.Tensor]:
    """Label → its present − absent prompt direction (dim,), whose score is the label's log-odds
    up to the logit scale."""
    return {label: pair[0] - pair[1]
            for label, pair in zip(classifier.labels, classifier.prompts, strict=True)}


def saliency_maps(embedder: Embedder, image: torch.Tensor, modality: str,
                  targets: Mapping[str, torch.Tensor], method: str = DEFAULT_METHOD
                  ) -> dict[str, torch.Tensor]:
    """Per target, a map (H, W) — (D, H, W) for a volume — in [0, 1] of where `image` (one
    preprocessed input, (C, H, W) or (C, D, H, W)) raises ``embedding · direction``.

    The model is left as it was: weights, train/eval mode and requires_grad flags.
    """
    if method not in METHODS:
        raise UsageError(f"unknown saliency method {method!r}; use one of {', '.join(METHODS)}")
    if image.ndim not in (3, 4):
        raise UsageError(f"expected one preprocessed image (C, H, W) or volume (C, D, H, W), "
                         f"got shape {tuple(image.shape)}")
    if not targets:
        return {}
    modality = embedder.modality(modality)
    model = embedder.model
    batch = image.float().unsqueeze(0).to(embedder.device)
    directions = torch.stack([direction.float() for direction in targets.values()])
    directions = directions.to(embedder.device)
    with _evaluating(model):
        if method == "gradcam":
            raw = _gradcam(model, modality, batch, directions)
        else:
            raw = _occlusion(model, modality, batch, directions)
    return {name: _unit_scaled(plane.cpu()) for name, plane in zip(targets, raw, strict=True)}


def randomised_copy(embedder: Embedder, seed: int = RANDOM_SEED) -> Embedder:
    """`embedder` with its image towers and projections as training initialises them (same
    architecture, random weights, nothing pretrained): the other side of the sanity check.
    The text tower is shared, not copied."""
    model = embedder.model
    config = model.config
    image = config.image.model_copy(update={"pretrained": False, "weights": None})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = MultiMedCLIP(config.model_copy(update={"image": image}), model.tokenizer,
                             text_encoder=model.text_encoder)
    return Embedder(fresh, device=embedder.device)


def randomisation_check(embedder: Embedder, images: Sequence[torch.Tensor], modality: str,
                        targets: Mapping[str, torch.Tensor], method: str = DEFAULT_METHOD,
                        randomised: Embedder | None = None) -> list[float]:
    """Spearman rank correlations between the trained and the randomised model's maps, one per
    image and target (image-major); a faithful method gives values near 0."""
    randomised = randomised or randomised_copy(embedder)
    correlations = []
    for image in images:
        trained = saliency_maps(embedder, image, modality, targets, method)
        random = saliency_maps(randomised, image, modality, targets, method)
        correlations.extend(rank_correlation(trained[name], random[name]) for name in targets)
    return correlations


def rank_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman rank correlation of two maps' pixels; 0 when either is constant (nothing
    salient), where Spearman's is undefined."""
    a, b = first.flatten().numpy(), second.flatten().numpy()
    if a.max() == a.min() or b.max() == b.min():
        return 0.0
    return float(spearmanr(a, b).statistic)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode (BatchNorm statistics untouched) for the duration, then as it was."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _image_tower(model: MultiMedCLIP, modality: str) -> nn.Module:
    """The timm network inside `modality`'s image encoder (which may wrap it, e.g. to pool
    slices)."""
    encoder = model._image_encoder(modality)
    for module in encoder.modules():
        if hasattr(module, "forward_features") and hasattr(module, "forward_head"):
            return module
    raise UsageError(f"saliency maps need a timm image tower; the {modality} encoder "
                     f"({type(encoder).__name__}) has none")


def _pooling(tower: nn.Module) -> nn.Module:
    """The global pooling module whose input is the tower's last spatial feature map (NCHW)."""
    pool = getattr(tower, "global_pool", None)
    if not isinstance(pool, nn.Module):
        pool = getattr(getattr(tower, "head", None), "global_pool", None)
    if not isinstance(pool, nn.Module) or getattr(tower, "output_fmt", "NCHW") != "NCHW":
        raise _no_feature_map(tower)
    return pool


def _no_feature_map(tower: nn.Module) -> UsageError:
    name = tower.pretrained_cfg.get("architecture") or type(tower).__name__
    return UsageError(f"Grad-CAM needs a CNN image tower with a spatial feature map before "
                      f"global pooling; {name} has none; use the occlusion method")


def _gradcam(model: MultiMedCLIP, modality: str, batch: torch.Tensor,
             directions: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (targets, [D,] H, W): the feature map weighted by the spatial mean of each
    score's gradient, kept where positive (as captum's LayerGradCam computes it)."""
    tower = _image_tower(model, modality)
    captured = []

    def keep(module: nn.Module, args: tuple) -> tuple:
        # A leaf cut from the trunk: backward stops here and the trunk keeps no graph.
        features = args[0].detach().requires_grad_()
        captured.append(features)
        return (features, *args[1:])

    handle = _pooling(tower).register_forward_pre_hook(keep)
    try:
        with torch.enable_grad():
            scores = model.encode_image(modality, batch)[0] @ directions.T
            (features,) = captured
            if features.ndim != 4:
                raise _no_feature_map(tower)
            gradients = [torch.autograd.grad(score, features, retain_graph=True)[0]
                         for score in scores]
    finally:
        handle.remove()
    features = features.detach()
    cams = torch.stack([(grad.mean(dim=(2, 3), keepdim=True) * features).sum(1).relu()
                        for grad in gradients])  # (targets, slices, h, w)
    height, width = batch.shape[-2:]
    upsampled = LayerAttribution.interpolate(cams.flatten(0, 1).unsqueeze(1).float(),
                                             (height, width), interpolate_mode="bilinear")
    maps = upsampled.reshape(len(directions), -1, height, width)
    return maps[:, 0] if batch.ndim == 4 else maps


def _occlusion(model: MultiMedCLIP, modality: str, batch: torch.Tensor,
               directions: torch.Tensor) -> torch.Tensor:
    """Occlusion maps (targets, [D,] H, W): score drop when a window of one slice is set to 0,
    less the smallest drop."""
    channels, *depth, height, width = batch.shape[1:]
    if depth and depth[0] > MAX_OCCLUSION_SLICES:
        windows = (2 * OCCLUSION_WINDOWS - 1) ** 2
        raise UsageError(f"occlusion of a {depth[0]}-slice volume costs {depth[0]}² × {windows} "
                         f"slice forwards; use gradcam, or at most {MAX_OCCLUSION_SLICES} slices")
    window = [max(1, math.ceil(side / OCCLUSION_WINDOWS)) for side in (height, width)]
    strides = [max(1, size // 2) for size in window]
    ones = [1] * len(depth)

    def scores(images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(modality, images) @ directions.T  # (B, targets)

    with torch.no_grad():
        attributions = Occlusion(scores).attribute(
            batch, sliding_window_shapes=(channels, *ones, *window),
            strides=(channels, *ones, *strides), baselines=0.0, target=None,
            perturbations_per_eval=max(1, OCCLUSION_BATCH // (depth[0] if depth else 1)))
    maps = attributions.mean(dim=1)  # (targets, [D,] H, W): mean over channels
    # Relative to the least supporting region: a mean-grey window can raise the score
    # wherever it goes, which would leave nothing positive to show.
    return maps - maps.flatten(1).amin(dim=1).view(-1, *[1] * (maps.ndim - 1))


def _unit_scaled(plane: torch.Tensor) -> torch.Tensor:
    """`plane` divided by its largest value, so the most salient pixel is 1 (all 0 if none)."""
    plane = torch.nan_to_num(plane.float()).clamp_min(0)
    peak = plane.max()
    return plane / peak if peak > 0 else plane
