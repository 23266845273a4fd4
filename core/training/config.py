"""The knobs of a training run, validated before any work starts."""

from __future__ import annotations

from typing import Literal, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Switch = Literal["auto", "on", "off"]


class TrainConfig(BaseModel):
    """How long and how to optimise; what is optimised comes from the stage's TrainingTask."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seeds python, numpy and torch (rank r uses seed + r).")
    max_steps: int = Field(gt=0, description="Total number of optimiser steps.")
    lr: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(
        0.05, ge=0, description="AdamW weight decay, applied to matrices only (not biases/norms)."
    )
    warmup_steps: int = Field(
        0, ge=0, description="Steps of linear warm-up before the cosine decay to 0."
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this value; None: no clipping."
    )
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps; 0: only at the end.")
    save_every: int = Field(
        0, ge=0, description="Save a checkpoint every N steps; 0: only at the end and on interrupt."
    )
    keep_checkpoints: int = Field(
        2, ge=1, description="How many step checkpoints to keep; older ones are deleted."
    )
    device: str = Field(
        "auto",
        description="'auto' (CUDA if available, else CPU) or a torch device: 'cpu', 'cuda:0'.",
    )
    amp: Switch = Field(
        "auto", description="Mixed precision (bf16, or fp16 with loss scaling); auto: on for CUDA."
    )
    compile: Switch = Field("auto", description="torch.compile the model; auto: on for CUDA.")
    log_every: int = Field(10, gt=0, description="Write a metrics record every N steps.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto":
            try:
                torch.device(value)
            except RuntimeError as error:
                raise ValueError(f"not a torch device: {value!r} ({error})") from None
        return value

    @model_validator(mode="after")
    def _warmup_fits(self) -> Self:
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})"
            )
        return self
