"""One training run per folder at a time; a run that died in its first checkpoint is not stuck;
a resumed run keeps the settings that decide its schedule and batches."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from alignment_fixtures import tiny_overrides, write_cov_ctr
from conftest import run_cli
from toy_task import toy_config, toy_task

from m3fm.checkpoint import CheckpointStore
from m3fm.registry.errors import M3fmError, UsageError
from m3fm.training import train
from m3fm.training.metrics import read_metrics

TOY_SCRIPT = Path(__file__).with_name("toy_task.py")


def train_records(out_dir: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["lr"]) for r in read_metrics(out_dir / "metrics.jsonl")
            if r["kind"] == "train"]


def assert_same_parameters(model_a, model_b):
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)


def toy(out_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(TOY_SCRIPT), str(out_dir), *args]


def wait_for(condition, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, f"{what}: the process ended ({process.returncode})"
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.05)


# Exclusive runs ------------------------------------------------------------------------------


@pytest.fixture
def held(tmp_path):
    """(run folder, pid): a helper process holding the folder's lock as a training run would."""
    out_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from m3fm.outputs import lock_directory

        with lock_directory(Path({str(out_dir)!r}), "run folder"):
            print("held", flush=True)
            time.sleep(120)
    """)
    helper = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert helper.stdout.readline().strip() == "held"
    yield out_dir, helper.pid
    helper.kill()
    helper.wait()


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(held, resume):
    out_dir, pid = held
    result = subprocess.run(toy(out_dir, *(["--resume"] if resume else [])),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"m3fm: error: run folder {out_dir} is in use by another m3fm process (pid {pid}); "
        "wait for it to finish or choose another output")
    assert not (out_dir / "metrics.jsonl").exists()


def test_m3fm_train_is_refused_before_it_reads_the_data(held, tmp_path, capsys):
    out_dir, pid = held
    code, _, err = run_cli(capsys, "train", "--recipe", "cov-ctr-align", "--data",
                           str(tmp_path), "--out", str(out_dir), *tiny_overrides())
    assert code == 1
    assert f"run folder {out_dir} is in use by another m3fm process (pid {pid})" in err


def test_two_real_runs_on_one_folder(tmp_path):
    out_dir = tmp_path / "run"
    first = subprocess.Popen(toy(out_dir, "--max-steps", "400", "--sleep", "0.05"),
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out_dir / "metrics.jsonl").exists(), "first run", first)
        for extra in ([], ["--resume"]):
            second = subprocess.run(toy(out_dir, *extra), capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 1, second.stderr
            assert f"is in use by another m3fm process (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr  # it saved a checkpoint and stopped, undisturbed
    saved = CheckpointStore(out_dir / "checkpoints").latest()
    assert saved is not None and saved.name in stderr


# A run that died in its first checkpoint ---------------------------------------------------


@pytest.fixture
def died_in_first_save(tmp_path) -> Path:
    """A run killed while writing its first checkpoint: a log, a partial checkpoint, no latest."""
    out_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(toy_task(crash_at_step=4), toy_config(), out_dir)
    partial = out_dir / "checkpoints" / ".step-000003.partial"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"cut short by the kill")
    assert len(train_records(out_dir)) == 3
    return out_dir


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_that_died_in_its_first_save_starts_again_in_place(died_in_first_save, tmp_path,
                                                                  caplog, resume):
    out_dir = died_in_first_save
    task = toy_task()
    with caplog.at_level(logging.WARNING, logger="m3fm"):
        result = train(task, toy_config(), out_dir, resume=resume)
    assert "stopped before its first checkpoint was complete; starting it again from step 0" \
        in caplog.text
    reference = toy_task()
    train(reference, toy_config(), tmp_path / "straight")
    assert result.step == 12
    assert_same_parameters(task.model, reference.model)
    assert train_records(out_dir) == train_records(tmp_path / "straight")  # the log replaced


def test_resume_of_an_empty_folder_is_still_refused(tmp_path):
    with pytest.raises(M3fmError, match="no checkpoint and no training run"):
        train(toy_task(), toy_config(), tmp_path / "never", resume=True)


# Settings a resumed run must keep ---------------------------------------------------------


@pytest.fixture
def interrupted(tmp_path) -> Path:
    """A 12-step run that crashed after saving step 4."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(toy_task(crash_at_step=6), toy_config(save_every=4), tmp_path)
    return tmp_path


def test_resume_with_another_learning_rate_is_refused_naming_it(interrupted):
    with pytest.raises(UsageError) as error:
        train(toy_task(), toy_config(save_every=4, lr=0.02, warmup_steps=3), interrupted,
              resume=True)
    message = str(error.value)
    assert "train.lr 0.01 -> 0.02, train.warmup_steps 2 -> 3" in message
    assert "resume with the run's settings" in message
    assert CheckpointStore(interrupted / "checkpoints").latest().name == "step-000004"


def test_resume_with_other_batch_settings_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(toy_task(crash_at_step=6), toy_config(save_every=4), tmp_path,
              batch_settings={"data.batch_size": 8, "data.sources": [{"path": "a"}]})
    with pytest.raises(UsageError, match=r"data\.batch_size 8 -> 16[;:]"):
        train(toy_task(), toy_config(save_every=4), tmp_path, resume=True,
              batch_settings={"data.batch_size": 16, "data.sources": ({"path": "a"},)})
    # Settings that only change the evaluation, the logging or the device are free.
    train(toy_task(), toy_config(save_every=4, eval_every=5, log_every=2), tmp_path,
          resume=True, batch_settings={"data.batch_size": 8, "data.sources": ({"path": "a"},)})


def test_raising_max_steps_of_an_unfinished_run_is_refused(interrupted):
    with pytest.raises(UsageError, match=r"train\.max_steps 12 -> 20 \(max_steps may only be "
                                         r"raised, to continue a finished run\)"):
        train(toy_task(), toy_config(save_every=4, max_steps=20), interrupted, resume=True)


def test_raising_max_steps_continues_a_finished_run_with_a_warning(tmp_path, caplog):
    train(toy_task(), toy_config(), tmp_path)
    with caplog.at_level(logging.WARNING, logger="m3fm"):
        result = train(toy_task(), toy_config(max_steps=20), tmp_path, resume=True)
    assert result.step == 20
    assert "which finished at step 12, to max_steps=20: the learning-rate schedule is " \
           "stretched" in caplog.text
    records = train_records(tmp_path)
    assert [step for step, _, _ in records] == list(range(1, 21))
    assert records[12][2] > 0  # step 13 trains at the stretched rate, not the old end's 0
    with pytest.raises(UsageError, match=r"train\.max_steps 20 -> 16"):
        train(toy_task(), toy_config(max_steps=16), tmp_path, resume=True)


def test_a_recipe_resumed_with_another_batch_size_is_refused(tmp_path, capsys):
    data = write_cov_ctr(tmp_path / "data")
    args = ["train", "--recipe", "cov-ctr-align", "--data", str(data), "--out",
            str(tmp_path / "run")]
    code, _, err = run_cli(capsys, *args, *tiny_overrides("train.max_steps=2"))
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--resume",
                           *tiny_overrides("train.max_steps=2", "data.batch_size=2"))
    assert code == 2
    assert "data.batch_size 4 -> 2" in err
