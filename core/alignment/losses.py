"""Contrastive and pivot losses of MultiMedCLIP, correct under torch.distributed.

Under DDP each rank holds a slice of the global batch.  As in open_clip (``local_loss`` with
``gather_with_grad``), every rank contrasts its own rows against the columns of all ranks,
gathered with autograd so that gradients reach the rank that produced them; averaged by DDP,
this equals the loss of one process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed._functional_collectives import all_gather_single_autograd


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(features: torch.Tensor) -> torch.Tensor:
    _, world = _world()
    if world == 1:
        return features
    # Differentiable gather (its backward is a reduce-scatter), replacing the deprecated
    # torch.distributed.nn.functional.all_gather that open_clip uses.
    return all_gather_single_autograd(features.contiguous(), 0, dist.group.WORLD)


MASKED_LOGIT = -1e4
"""Logit of a placeholder row as a candidate: no weight in any softmax, finite in fp16."""


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
    valid: torch.Tensor | None = None, meaning: torch.Tensor | None = None,
    own_weight: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned, L2-normalised embeddings `a` and `b`.

    Row i of `a` and row i of `b` are a positive pair; every other row of the (global) batch
    is a negative.  Rows where the boolean `valid` is False are placeholders (an image that
    could not be read): they are neither anyone's negative nor a query, and the loss is the
    mean over the valid rows, so every rank keeps the same batch shape for the gather.

    `meaning` (int64, one id per row) makes the targets multi-positive: rows whose ids are
    equal (reports that say the same thing) are positives of each other instead of
    negatives, and each query's target is the uniform distribution over the (valid) columns
    that share its id.  `own_weight` moves that much of each target's mass back onto the
    row's own pair (1 gives the one-positive loss again), so that reports with the same
    findings are pulled together without being made identical.  Without `meaning` the loss
    is the one-positive-per-row InfoNCE.
    """
    rank, world = _world()
    if valid is None and world > 1:
        # Every rank must make the same collectives: another rank may hold placeholders.
        valid = torch.ones(len(a), dtype=torch.bool, device=a.device)
    all_a, all_b = _gather(a), _gather(b)
    labels = torch.arange(len(a), device=a.device) + rank * len(a)
    a_to_b = logit_scale * a @ all_b.T
    b_to_a = logit_scale * b @ all_a.T
    if meaning is not None:
        return _multi_positive(a_to_b, b_to_a, labels, valid, meaning, own_weight)
    if valid is None:
        return (F.cross_entropy(a_to_b, labels) + F.cross_entropy(b_to_a, labels)) / 2
    candidates = _gather(valid.float()) > 0  # gloo gathers no booleans
    a_to_b = a_to_b.masked_fill(~candidates, MASKED_LOGIT)
    b_to_a = b_to_a.masked_fill(~candidates, MASKED_LOGIT)
    per_row = (F.cross_entropy(a_to_b, labels, reduction="none")
               + F.cross_entropy(b_to_a, labels, reduction="none")) / 2
    return torch.where(valid, per_row, 0).sum() / valid.sum().clamp(min=1)


def _multi_positive(
    a_to_b: torch.Tensor, b_to_a: torch.Tensor, labels: torch.Tensor,
    valid: torch.Tensor | None, meaning: torch.Tensor, own_weight: float,
) -> torch.Tensor:
    """The soft-target loss of :func:`contrastive_loss` given the meaning ids of the rows."""
    if meaning.shape != labels.shape:
        raise ValueError(f"meaning has shape {tuple(meaning.shape)}; expected ({len(labels)},)")
    meaning = meaning.to(device=labels.device, dtype=torch.int64)
    targets = meaning[:, None] == _gather_ids(meaning)[None, :]
    if valid is not None:
        candidates = _gather(valid.float()) > 0  # gloo gathers no booleans
        targets &= candidates[None, :]
        a_to_b = a_to_b.masked_fill(~candidates, MASKED_LOGIT)
        b_to_a = b_to_a.masked_fill(~candidates, MASKED_LOGIT)
    # A row's own column is always a target, so a placeholder query (whose own column is not
    # a candidate) keeps a finite loss, which the mask below then drops.
    targets[torch.arange(len(labels), device=labels.device), labels] = True
    targets = targets.to(a_to_b.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    if own_weight:
        own = F.one_hot(labels, targets.shape[1]).to(targets.dtype)
        targets = (1 - own_weight) * targets + own_weight * own
    per_row = (F.cross_entropy(a_to_b, targets, reduction="none")
               + F.cross_entropy(b_to_a, targets, reduction="none")) / 2
    if valid is None:
        return per_row.mean()
    return torch.where(valid, per_row, 0).sum() / valid.sum().clamp(min=1)


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Integer ids of every rank's rows, in rank order (no autograd: ids have no gradient)."""
    _, world = _world()
    if world == 1:
        return ids
    gathered = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(gathered, ids.contiguous())  # int64: gloo and NCCL both gather it
    return torch.cat(gathered)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance from `student` to the detached `teacher` embeddings.

    Pulls a non-English report onto its English parallel without moving the English side,
    which stays anchored to the images.
    """
    return (1 - (student * teacher.detach()).sum(dim=-1)).mean()
