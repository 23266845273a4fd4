"""Where and how fast a run executes: device, mixed precision and compilation.

The choice is a pure function of the config and of what the machine offers, so that the rule
"fast paths on for CUDA, off on CPU unless asked for" is written once and tested without a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from m3fm.registry.errors import M3fmError
from m3fm.training.config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of a run."""

    device: torch.device
    amp_dtype: torch.dtype | None
    """bf16 or fp16 autocast; None runs in full precision."""
    compile: bool

    @property
    def needs_loss_scaling(self) -> bool:
        """fp16 gradients underflow without a GradScaler; bf16 has fp32's range and needs none."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast region for forward passes (a no-op when AMP is off)."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )


def resolve_runtime(
    config: TrainConfig, *, cuda_available: bool, cuda_bf16: bool, local_rank: int = 0
) -> Runtime:
    """Turn the config's 'auto' switches into concrete choices for this machine and rank.

    A bare 'cuda' (or 'auto' on a CUDA machine) means this rank's own GPU, ``cuda:LOCAL_RANK``.
    AMP uses bf16 where the device supports it (CPU always, CUDA from Ampere on), else fp16.
    """
    if config.device == "auto":
        device = torch.device("cuda", local_rank) if cuda_available else torch.device("cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda":
            if not cuda_available:
                raise M3fmError(f"device {config.device!r} requested but CUDA is not available")
            if device.index is None:
                device = torch.device("cuda", local_rank)
    on_cuda = device.type == "cuda"
    use_amp = config.amp == "on" or (config.amp == "auto" and on_cuda)
    amp_dtype = None
    if use_amp:
        amp_dtype = torch.float16 if on_cuda and not cuda_bf16 else torch.bfloat16
    use_compile = config.compile == "on" or (config.compile == "auto" and on_cuda)
    return Runtime(device=device, amp_dtype=amp_dtype, compile=use_compile)


def detect_runtime(config: TrainConfig, *, local_rank: int = 0) -> Runtime:
    """:func:`resolve_runtime` for the machine this process runs on."""
    cuda_available = torch.cuda.is_available()
    return resolve_runtime(
        config,
        cuda_available=cuda_available,
        cuda_bf16=cuda_available and torch.cuda.is_bf16_supported(),
        local_rank=local_rank,
    )
