"""A small CNN trained from scratch on the labelled images: the baseline without pre-training.

Zero-shot and few-shot results of a foundation model mean little alone; this baseline shows
what the same labelled images can do with no pre-training at all.  It is deliberately plain:
a ResNet-10 (timm ``resnet10t`` in 2D, MONAI ``resnet10`` in 3D), AdamW, cross-entropy with
balanced class weights, horizontal flips in 2D, and a fixed seed so CPU runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from m3fm.progress import track
from m3fm.registry import MissingDataError, UsageError


def _build_model(images: torch.Tensor) -> torch.nn.Module:
    channels = int(images.shape[1])
    if images.ndim == 4:
        import timm

        return timm.create_model("resnet10t", pretrained=False, num_classes=2, in_chans=channels)
    if images.ndim == 5:
        from monai.networks.nets import resnet10

        return resnet10(spatial_dims=3, n_input_channels=channels, num_classes=2)
    raise UsageError(
        f"the CNN baseline needs images of shape (N, C, H, W) or (N, C, D, H, W);"
        f" got shape {tuple(images.shape)}"
    )


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split a permutation into batches, folding a last batch of one into the one before.

    Batch normalisation cannot train on a batch of a single image.
    """
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def train_small_cnn(
    train_images: torch.Tensor,
    train_labels: Sequence[int],
    test_images: torch.Tensor,
    *,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Train a ResNet-10 from scratch and return P(class 1) for each test image."""
    labels = np.asarray(train_labels).astype(int)
    if len(labels) != len(train_images):
        raise UsageError(
            f"the CNN baseline got {len(train_images)} training images but {len(labels)} labels"
        )
    classes = np.unique(labels)
    if not set(classes.tolist()) <= {0, 1}:
        raise UsageError(f"the CNN baseline needs labels 0 and 1; got {classes.tolist()}")
    if len(classes) < 2:
        raise MissingDataError(
            "the CNN baseline needs both classes in the training images;"
            f" got only class {int(classes[0]) if len(classes) else 'none'}"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = _build_model(train_images).to(device)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.as_tensor(weights, dtype=torch.float32, device=device)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    targets = torch.as_tensor(labels, dtype=torch.long)
    flip_2d = train_images.ndim == 4

    model.train()
    for _ in track(range(epochs), "training the CNN baseline"):
        order = torch.randperm(len(train_images), generator=generator)
        for index in _batches(order, batch_size):
            batch = train_images[index].float()
            if flip_2d:
                flip = torch.rand(len(index), generator=generator) < 0.5
                batch[flip] = batch[flip].flip(-1)
            optimizer.zero_grad()
            loss = loss_fn(model(batch.to(device)), targets[index].to(device))
            loss.backward()
            optimizer.step()

    model.eval()
    probabilities = []
    with torch.no_grad():
        for batch in test_images.split(batch_size):
            logits = model(batch.float().to(device))
            probabilities.append(torch.softmax(logits, dim=1)[:, 1].cpu())
    if not probabilities:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(probabilities).double().numpy()
