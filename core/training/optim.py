"""AdamW with linear warm-up and cosine decay: the one optimisation recipe every stage shares."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from m3fm.training.config import TrainConfig


def learning_rate_factor(step: int, *, warmup_steps: int, max_steps: int) -> float:
    """The fraction of the peak learning rate used for optimiser step `step` (0-based).

    Warm-up rises linearly and never uses a zero rate (that step would be wasted); the cosine
    then falls from the peak to reach 0 just after the last step.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays weight matrices but not biases or norm scales.

    Decaying 1-d parameters pulls norm gains towards 0 and biases towards the origin, which
    hurts rather than regularises; this is the usual split (GPT-2, CLIP).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """The warm-up + cosine schedule, stepped once per optimiser step."""

    def factor(step: int) -> float:
        return learning_rate_factor(
            step, warmup_steps=config.warmup_steps, max_steps=config.max_steps
        )

    return LambdaLR(optimizer, factor)
