"""Two real processes under torchrun train like one process over the union of their shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_task import toy_config, toy_task

from m3fm.checkpoint import load_model_weights
from m3fm.training import train
from m3fm.training.metrics import read_metrics

TOY_SCRIPT = Path(__file__).with_name("toy_task.py")


def train_losses(out_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("workers", [0, 1])
def test_two_ranks_match_one_process_on_the_union_of_their_shards(tmp_path, workers):
    """Also with each rank's batches built by a DataLoader worker of its own."""
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    ddp_dir = tmp_path / "ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    completed = subprocess.run(
        [*launch, str(TOY_SCRIPT), str(ddp_dir), "--dropout", "0", "--hash-dir", str(hashes),
         "--workers", str(workers)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank_hashes = [(hashes / f"rank-{rank}.txt").read_text() for rank in (0, 1)]
    assert rank_hashes[0] == rank_hashes[1], "the ranks ended with different parameters"

    # One process over both shards, with the same effective batch (8 = 2 ranks x 4).  DDP
    # averages the two shard means where one process takes the mean of all 8 samples: equal
    # in exact arithmetic, summed in another order in floating point, hence the tolerance.
    single = toy_task(dropout=0, unused_tower=True)
    train(single, toy_config(), tmp_path / "single")
    ddp_model = toy_task(dropout=0, unused_tower=True).model
    load_model_weights(ddp_model, ddp_dir / "final")
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(ddp_model.state_dict()[name], tensor, rtol=0, atol=1e-6)
    assert train_losses(ddp_dir) == pytest.approx(train_losses(tmp_path / "single"), abs=1e-6)
    assert read_metrics(ddp_dir / "metrics.jsonl")[0]["batch_size"] == 4  # each rank's half
