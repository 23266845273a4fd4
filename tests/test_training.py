"""The generic training loop, in this process: outputs, determinism, resuming, failures."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest
import torch
from rich.console import Console
from toy_task import toy_config, toy_task

from m3fm.checkpoint import CheckpointStore, load_model_weights, read_metadata
from m3fm.registry.errors import M3fmError
from m3fm.training import NonFiniteLossError, TrainingInterrupted, train
from m3fm.training import metrics as metrics_module
from m3fm.training.metrics import read_metrics
from m3fm.training.progress import TrainingProgress
from m3fm.training.state import TRAINING_STATE_NAME


def train_records(out_dir):
    return [
        (r["step"], r["loss"])
        for r in read_metrics(out_dir / "metrics.jsonl")
        if r["kind"] == "train"
    ]


def eval_records(out_dir):
    return [
        (r["step"], r["mse"])
        for r in read_metrics(out_dir / "metrics.jsonl")
        if r["kind"] == "eval"
    ]


def assert_same_parameters(model_a, model_b):
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)


def assert_one_line(error):
    assert "\n" not in str(error.value), str(error.value)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """12 uninterrupted steps: the reference every resumed run must match bit for bit."""
    out_dir = tmp_path_factory.mktemp("straight")
    task = toy_task()
    result = train(task, toy_config(eval_every=6, save_every=4), out_dir)
    return task, result, out_dir


def test_a_run_leaves_its_log_checkpoints_and_final_model(straight_run):
    task, result, out_dir = straight_run
    assert result.step == 12 and result.checkpoint == out_dir / "final"
    records = read_metrics(out_dir / "metrics.jsonl")
    train_logs = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_logs] == list(range(1, 13))
    assert {"epoch", "loss", "lr", "steps_per_s", "wall_time", "batch_size"} <= train_logs[0].keys()
    assert train_logs[-1]["loss"] == result.loss and train_logs[-1]["epoch"] == 1
    assert [step for step, _ in eval_records(out_dir)] == [6, 12]
    assert result.metrics == {"mse": eval_records(out_dir)[-1][1]}

    store = CheckpointStore(out_dir / "checkpoints")
    assert list(store.steps()) == [8, 12]  # keep_checkpoints=2 deleted step 4
    assert store.latest() == out_dir / "checkpoints" / "step-000012"
    final = out_dir / "final"
    assert sorted(p.name for p in final.iterdir()) == [
        "config.json",
        "metadata.json",
        "model.safetensors",
    ]
    assert (store.latest() / TRAINING_STATE_NAME).is_file()
    metadata = read_metadata(final)
    assert metadata["step"] == 12 and metadata["metrics"] == result.metrics
    assert metadata["task"]["data"] == "toy-regression"
    loaded = toy_task().model
    with torch.no_grad():
        for parameter in loaded.parameters():
            parameter.zero_()
    load_model_weights(loaded, final)
    assert_same_parameters(loaded, task.model)
    assert not any(p.name.startswith(".") for p in (out_dir / "checkpoints").iterdir())


def test_tensorboard_is_used_only_when_installed(straight_run):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    assert (straight_run[2] / "tensorboard").exists() == installed


def test_scalars_go_to_tensorboard(tmp_path, monkeypatch):
    scalars = []

    class FakeWriter:
        def add_scalar(self, tag, value, step, wall_time):
            scalars.append((tag, step))

        def close(self):
            scalars.append("closed")

    monkeypatch.setattr(
        metrics_module, "open_tensorboard", lambda log_dir, purge_step: FakeWriter()
    )
    train(toy_task(), toy_config(max_steps=2), tmp_path)
    assert ("train/loss", 1) in scalars and ("train/lr", 2) in scalars
    assert ("eval/mse", 2) in scalars and scalars[-1] == "closed"


def test_the_same_seed_gives_the_same_run(tmp_path, straight_run):
    task = toy_task()
    train(task, toy_config(eval_every=6, save_every=4), tmp_path / "again")
    assert_same_parameters(task.model, straight_run[0].model)
    assert train_records(tmp_path / "again") == train_records(straight_run[2])
    other_seed = toy_task()  # same initial weights, other dropout draws
    train(other_seed, toy_config(seed=1), tmp_path / "other")
    assert train_records(tmp_path / "other") != train_records(straight_run[2])


def test_resume_after_a_crash_is_bit_for_bit_the_straight_run(tmp_path, straight_run):
    config = toy_config(eval_every=6, save_every=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(toy_task(crash_at_step=8), config, tmp_path)
    assert [step for step, _ in train_records(tmp_path)] == list(range(1, 8))
    assert CheckpointStore(tmp_path / "checkpoints").latest().name == "step-000005"

    task = toy_task()
    with torch.no_grad():  # the checkpoint, not the initialisation, must decide the weights
        for parameter in task.model.parameters():
            parameter.add_(1.0)
    result = train(task, config, tmp_path, resume=True)
    reference_task, reference, reference_dir = straight_run
    assert_same_parameters(task.model, reference_task.model)
    assert train_records(tmp_path) == train_records(reference_dir)
    assert eval_records(tmp_path) == eval_records(reference_dir)
    assert (result.step, result.loss, result.metrics) == (12, reference.loss, reference.metrics)


def test_a_signal_saves_the_current_step_and_the_run_resumes_exactly(tmp_path, straight_run):
    task = toy_task()
    original_loss, steps_started = task.loss, []

    def loss_then_signal(model, batch):
        steps_started.append(len(steps_started) + 1)
        if len(steps_started) == 4:  # as if a scheduler preempted the job during step 4
            os.kill(os.getpid(), signal.SIGTERM)
        return original_loss(model, batch)

    task.loss = loss_then_signal
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as error:
        train(task, toy_config(eval_every=6), tmp_path)
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert_one_line(error)
    assert "SIGTERM at step 4" in str(error.value) and "--resume" in str(error.value)
    assert CheckpointStore(tmp_path / "checkpoints").latest().name == "step-000004"

    resumed = toy_task()
    train(resumed, toy_config(eval_every=6), tmp_path, resume=True)
    assert_same_parameters(resumed.model, straight_run[0].model)
    assert train_records(tmp_path) == train_records(straight_run[2])


def test_resuming_a_finished_run_just_returns_its_result(straight_run):
    _, reference, out_dir = straight_run
    result = train(toy_task(), toy_config(eval_every=6, save_every=4), out_dir, resume=True)
    assert result == reference


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(M3fmError, match="no checkpoint") as error:
        train(toy_task(), toy_config(), tmp_path / "empty", resume=True)
    assert_one_line(error)


def test_an_existing_run_is_never_overwritten(tmp_path, straight_run):
    with pytest.raises(M3fmError, match="a finished training run; pass --resume") as error:
        train(toy_task(), toy_config(), straight_run[2])
    assert_one_line(error)
    with pytest.raises(RuntimeError):
        train(toy_task(crash_at_step=6), toy_config(save_every=4), tmp_path)  # saved step 4
    with pytest.raises(M3fmError, match="a started training run"):
        train(toy_task(), toy_config(), tmp_path)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as error:
        train(toy_task(poisoned_batch=(0, 6)), toy_config(save_every=5), tmp_path)
    assert_one_line(error)
    assert "nan at step 7" in str(error.value) and "step-000005" in str(error.value)
    store = CheckpointStore(tmp_path / "checkpoints")
    assert list(store.steps()) == [5] and store.latest().name == "step-000005"
    assert not (tmp_path / "final").exists()


def test_an_epoch_without_batches_is_an_error(tmp_path):
    task = toy_task()
    task.batches = lambda epoch: []
    with pytest.raises(M3fmError, match="no batches for epoch 0"):
        train(task, toy_config(), tmp_path)


def test_amp_on_cpu_runs_the_forward_pass_in_bfloat16(tmp_path):
    task = toy_task()
    original_loss, dtypes = task.loss, []

    def recording_loss(model, batch):
        dtypes.append(model.body(batch[0]).dtype)
        return original_loss(model, batch)

    task.loss = recording_loss
    train(task, toy_config(max_steps=2, amp="on"), tmp_path)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert next(task.model.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_compile_on_cpu(tmp_path):
    result = train(toy_task(), toy_config(max_steps=2, compile="on"), tmp_path)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.loss))


def test_progress_bar_shows_steps_loss_and_speed():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with TrainingProgress(max_steps=12, start_step=0, enabled=True, console=console) as progress:
        for step in range(1, 6):
            progress.advance(step, 0.25)
            time.sleep(0.01)
    assert "5/12" in screen.getvalue() and "loss 0.25" in screen.getvalue()
    assert "steps/s" in screen.getvalue()
