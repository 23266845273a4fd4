"""The training loop's parts on their own: config, runtime choice, schedule, RNG, saved state."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pydantic
import pytest
import torch

from m3fm.checkpoint import CheckpointError
from m3fm.registry.errors import M3fmError
from m3fm.training import TrainConfig, resolve_runtime, seed_everything
from m3fm.training.optim import learning_rate_factor
from m3fm.training.rng import capture_rng_state, restore_rng_state
from m3fm.training.state import TrainingState

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "settings",
    [
        {"max_steps": 0},
        {"max_steps": 10, "lr": 0},
        {"max_steps": 10, "warmup_steps": 11},
        {"max_steps": 10, "keep_checkpoints": 0},
        {"max_steps": 10, "amp": "yes"},
        {"max_steps": 10, "device": "gpu7"},
        {"max_steps": 10, "learning_rate": 1e-3},
    ],
)
def test_config_rejects_impossible_settings(settings):
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(**settings)


def test_every_config_field_is_described():
    assert all(field.description for field in TrainConfig.model_fields.values())


def runtime(cuda_available=False, cuda_bf16=False, local_rank=0, **settings):
    config = TrainConfig(max_steps=1, **settings)
    return resolve_runtime(
        config, cuda_available=cuda_available, cuda_bf16=cuda_bf16, local_rank=local_rank
    )


def test_auto_is_plain_on_cpu_and_fast_on_cuda():
    cpu = runtime()
    assert (cpu.device, cpu.amp_dtype, cpu.compile) == (CPU, None, False)
    cuda = runtime(cuda_available=True, cuda_bf16=True, local_rank=1)
    assert (cuda.device, cuda.amp_dtype, cuda.compile) == (
        torch.device("cuda", 1),
        torch.bfloat16,
        True,
    )
    assert not cuda.needs_loss_scaling


def test_amp_falls_back_to_fp16_with_loss_scaling_on_older_gpus():
    old_gpu = runtime(cuda_available=True, cuda_bf16=False)
    assert old_gpu.amp_dtype == torch.float16 and old_gpu.needs_loss_scaling


def test_switches_can_be_forced_either_way():
    forced_on = runtime(amp="on", compile="on")
    assert forced_on.amp_dtype == torch.bfloat16 and forced_on.compile
    forced_off = runtime(cuda_available=True, amp="off", compile="off")
    assert forced_off.amp_dtype is None and not forced_off.compile
    on_cpu = runtime(cuda_available=True, device="cpu")
    assert on_cpu.device == CPU and on_cpu.amp_dtype is None and not on_cpu.compile


def test_explicit_devices():
    assert runtime(cuda_available=True, local_rank=3, device="cuda").device.index == 3
    assert runtime(cuda_available=True, local_rank=3, device="cuda:0").device.index == 0
    with pytest.raises(M3fmError, match="CUDA is not available"):
        runtime(device="cuda")


def test_schedule_warms_up_then_decays_to_zero():
    factors = [learning_rate_factor(s, warmup_steps=4, max_steps=20) for s in range(20)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == 1.0
    assert all(a > b for a, b in itertools.pairwise(factors[4:]))
    assert learning_rate_factor(20, warmup_steps=4, max_steps=20) == pytest.approx(0.0)
    assert learning_rate_factor(10, warmup_steps=0, max_steps=20) == pytest.approx(0.5)


def draws():
    return random.random(), np.random.rand(), torch.rand(1).item(), random.gauss(0, 1)


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    seed_everything(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng_state(CPU)
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = draws()
    seed_everything(99)
    restore_rng_state(torch.load(path, weights_only=True), CPU)
    assert draws() == expected


def training_state() -> TrainingState:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    return TrainingState(
        step=1,
        epoch=0,
        batch_index=1,
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": 1},
        grad_scaler={},
        rng=[capture_rng_state(CPU)],
        last_loss=0.5,
    )


def test_training_state_round_trips(tmp_path):
    saved = training_state()
    saved.save(tmp_path / "training_state.pt")
    loaded = TrainingState.load(tmp_path / "training_state.pt")
    assert (loaded.step, loaded.batch_index, loaded.last_loss) == (1, 1, 0.5)
    assert torch.equal(
        loaded.optimizer["state"][0]["exp_avg"], saved.optimizer["state"][0]["exp_avg"]
    )


class Payload:
    """Anything that is not plain data: unpickling it could run arbitrary code."""


def test_training_state_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "training_state.pt"
    torch.save({"format": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing") as error:
        TrainingState.load(path)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match=r"no training_state\.pt"):
        TrainingState.load(tmp_path / "elsewhere" / "training_state.pt")
