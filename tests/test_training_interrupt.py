"""Ctrl-C on a real training process: it saves where it stopped, and the run resumes exactly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from toy_task import toy_config, toy_task

from m3fm.checkpoint import CheckpointStore
from m3fm.training import train
from m3fm.training.metrics import read_metrics

TOY_SCRIPT = Path(__file__).with_name("toy_task.py")
STEPS = 40


def logged_steps(metrics_file: Path) -> int:
    return len(read_metrics(metrics_file)) if metrics_file.exists() else 0


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes_to_the_same_end(tmp_path):
    out_dir = tmp_path / "run"
    command = [sys.executable, str(TOY_SCRIPT), str(out_dir), "--max-steps", str(STEPS)]
    process = subprocess.Popen([*command, "--sleep", "0.05"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while logged_steps(out_dir / "metrics.jsonl") < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "the training process never got going"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("m3fm: error: training stopped by SIGINT at step "), stderr
    assert "--resume" in message
    stopped_at = CheckpointStore(out_dir / "checkpoints").latest()
    assert stopped_at is not None and stopped_at.name in message
    assert 3 <= int(stopped_at.name.removeprefix("step-")) < STEPS

    resumed, straight = toy_task(), toy_task()
    train(resumed, toy_config(max_steps=STEPS), out_dir, resume=True)
    train(straight, toy_config(max_steps=STEPS), tmp_path / "straight")
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert read_metrics(out_dir / "metrics.jsonl")[-1]["step"] == STEPS
    losses = [
        [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "train"]
        for d in (out_dir, tmp_path / "straight")
    ]
    assert losses[0] == losses[1]
