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
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned, L2-normalised embeddings `a` and `b`.

    Row i of `a` and row i of `b` are a positive pair; every other row of the (global) batch
    is a negative.  Rows where the boolean `valid` is False are placeholders (an image that
    could not be read): they are neither anyone's negative nor a query, and the loss is the
    mean over the valid rows, so every rank keeps the same batch shape for the gather.
    """
    rank, _ = _world()
    all_a, all_b = _gather(a), _gather(b)
    labels = torch.arange(len(a), device=a.device) + rank * len(a)
    a_to_b = logit_scale * a @ all_b.T
    b_to_a = logit_scale * b @ all_a.T
    if valid is None:
        return (F.cross_entropy(a_to_b, labels) + F.cross_entropy(b_to_a, labels)) / 2
    candidates = _gather(valid.float()) > 0  # gloo gathers no booleans
    a_to_b = a_to_b.masked_fill(~candidates, MASKED_LOGIT)
    b_to_a = b_to_a.masked_fill(~candidates, MASKED_LOGIT)
    per_row = (F.cross_entropy(a_to_b, labels, reduction="none")
               + F.cross_entropy(b_to_a, labels, reduction="none")) / 2
    return torch.where(valid, per_row, 0).sum() / valid.sum().clamp(min=1)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance from `student` to the detached `teacher` embeddings.

    Pulls a non-English report onto its English parallel without moving the English side,
    which stays anchored to the images.
    """
    return (1 - (student * teacher.detach()).sum(dim=-1)).mean()
