"""Stage 1 end to end through the CLI: train, evaluate, embed, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from alignment_fixtures import run_on_two_processes, tiny_overrides, write_cov_ctr
from conftest import run_cli
from safetensors.torch import load_file

import m3fm
from m3fm.cli import main
from m3fm.training.metrics import read_metrics

STEPS = 8



@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, run folder) of a tiny model trained for a few steps on synthetic data."""
    root = tmp_path_factory.mktemp("align")
    data = write_cov_ctr(root / "data")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "cov-ctr-align", "--data", str(data), "--out",
              str(root / "run"), *tiny_overrides(f"train.max_steps={STEPS}")])
    assert exit_info.value.code == 0
    return data, root / "run"


def test_training_writes_a_loadable_checkpoint_with_metadata(trained):
    _, run = trained
    metadata = json.loads((run / "final" / "metadata.json").read_text())
    assert metadata["step"] == STEPS and metadata["task"]["recipe"]["name"] == "cov-ctr-align"
    assert metadata["task"]["pairs"] == {"image_reports": 8, "parallel": 8, "skipped_images": 0}
    assert any("ct/zh/image→text/R@5" in key for key in metadata["metrics"])
    model = m3fm.load(run / "final")
    english = model.embed_texts(["No abnormal density in both lungs."], lang="en")
    assert english.shape == (1, 16) and torch.allclose(english.norm(dim=-1), torch.ones(1))


def test_evaluate_retrieval_writes_json(trained, capsys, tmp_path):
    data, run = trained
    out = tmp_path / "retrieval.json"
    code, stdout, _ = run_cli(capsys, "evaluate", "--checkpoint", str(run / "final"), "--data",
                              str(data), "--task", "retrieval", "--lang", "zh", "--out", str(out))
    rows = json.loads(out.read_text())
    assert code == 0 and "retrieval on val" in stdout
    assert {(row["language"], row["direction"]) for row in rows} == {
        ("zh", "image→text"), ("zh", "text→image")}
    assert rows[0]["n"] == 4 and 0 <= rows[0]["R@1"] <= 1


def test_evaluate_on_a_split_without_images_is_one_line(trained, capsys):
    data, run = trained
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(run / "final"), "--data",
                           str(data), "--task", "retrieval", "--split", "test")
    assert code == 2 and err.startswith("m3fm: error: split 'test'") and len(err.splitlines()) == 1


def test_embed_images_keeps_going_past_a_bad_file(trained, capsys, tmp_path):
    data, run = trained
    out = tmp_path / "vectors.safetensors"
    code, _, err = run_cli(capsys, "embed", "--checkpoint", str(run / "final"), "--plugin", "ct",
                           "--out", str(out), str(data / "images" / "val-0.png"),
                           str(tmp_path / "missing.png"))
    assert code == 1 and "missing.png: no such file or folder" in err
    assert load_file(out)["embeddings"].shape == (1, 16)
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' 0600


def test_existing_run_is_not_overwritten(trained, capsys):
    data, run = trained
    code, _, err = run_cli(capsys, "train", "--recipe", "cov-ctr-align", "--data", str(data),
                           "--out", str(run), *tiny_overrides("train.max_steps=4"))
    assert code != 0 and "--resume" in err


def test_run_killed_mid_training_resumes_to_the_same_weights(trained, capsys, tmp_path):
    """SIGKILL (no chance to save) after the first checkpoint, then --resume to the end; with
    images read by two loader workers (the uninterrupted run read them in-process), so the
    batches and their random crops do not depend on the workers either."""
    data, run = trained
    partial = tmp_path / "partial"
    args = ["train", "--recipe", "cov-ctr-align", "--data", str(data), "--out", str(partial),
            *tiny_overrides(f"train.max_steps={STEPS}", "data.workers=2")]
    process = subprocess.Popen(
        [sys.executable, "-c", "from m3fm.cli import main; main()", *args,
         "--set", "train.save_every=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first_checkpoint = partial / "checkpoints" / "step-000002"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (partial / "final").exists(), "the run finished before it could be killed"
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    straight = load_file(run / "final" / "model.safetensors")
    resumed = load_file(partial / "final" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_modality_without_pairs_stops_before_training(trained, capsys, tmp_path):
    data, _ = trained
    code, _, err = run_cli(capsys, "train", "--recipe", "cov-ctr-align", "--data", str(data),
                           "--out", str(tmp_path / "run"),
                           *tiny_overrides("model.modalities=[ct, cxr]"))
    assert code == 1
    assert "no cxr image–report pairs in split 'train'" in err


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_images_are_skipped_and_counted(capsys, tmp_path, workers):
    """Two epochs of two steps: the broken image is met twice, warned about and counted once."""
    data = write_cov_ctr(tmp_path / "data")
    (data / "images" / "train-1.png").write_bytes(b"\x89PNG broken")
    code, _, err = run_cli(capsys, "train", "--recipe", "cov-ctr-align", "--data", str(data),
                           "--out", str(tmp_path / "run"),
                           *tiny_overrides("train.max_steps=4", "train.log_every=1",
                                          f"data.workers={workers}"))
    metadata = json.loads((tmp_path / "run" / "final" / "metadata.json").read_text())
    assert code == 0 and sum("train-1.png" in line for line in err.splitlines()) == 1
    assert metadata["task"]["pairs"]["skipped_images"] == 1
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
              if r["kind"] == "train"]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)


DDP_LOSS_SCRIPT = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist
    import torch.nn.functional as F
    from m3fm.alignment.losses import contrastive_loss

    torch.manual_seed(0)
    a = torch.randn(8, 6, requires_grad=True)
    b = torch.randn(8, 6, requires_grad=True)
    scale = torch.tensor(5.0)
    full = contrastive_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), scale)  # one process
    full.backward()
    full_grad = a.grad.clone()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * 4, (rank + 1) * 4)
    local_a = a.detach()[rows].clone().requires_grad_()
    local = contrastive_loss(F.normalize(local_a, dim=-1), F.normalize(b.detach()[rows], dim=-1),
                             scale)
    local.backward()
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, local.detach().reshape(1))
    grad = local_a.grad / world  # what DDP's gradient averaging does
    grads = [torch.zeros_like(grad) for _ in range(world)]
    dist.all_gather(grads, grad)
    if rank == 0:
        assert torch.allclose(torch.cat(losses).mean(), full.detach(), atol=1e-6)
        assert torch.allclose(torch.cat(grads), full_grad, atol=1e-6), "gradients differ"
        print("ddp-loss-ok")
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_distributed_contrastive_loss_equals_the_full_batch_loss(tmp_path):
    """Two real processes: gathered local losses and gradients equal one full-batch process."""
    result = run_on_two_processes(DDP_LOSS_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ddp-loss-ok" in result.stdout


@pytest.mark.slow
def test_alignment_trains_under_torchrun_with_two_processes(tmp_path):
    """The real CLI under torchrun: two gloo ranks share each batch and agree on the weights."""
    data = write_cov_ctr(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "m3fm.cli", "train", "--recipe", "cov-ctr-align", "--data", str(data), "--out",
         str(tmp_path / "run"), *tiny_overrides("train.max_steps=3")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((tmp_path / "run" / "final" / "metadata.json").read_text())
    assert metadata["world_size"] == 2 and metadata["step"] == 3
    model = m3fm.load(tmp_path / "run" / "final")
    assert model.embed_texts(["No effusion."], lang="en").isfinite().all()


def test_a_file_that_kills_its_loader_worker_is_skipped_and_the_run_goes_on(
        tmp_path, monkeypatch):
    """A decoder that segfaults on one file: the step is built again with each file read
    alone, that one file is skipped and counted, and training finishes."""
    from m3fm.alignment.task import AlignmentTask
    from m3fm.data import streaming
    from m3fm.recipes import load_recipe
    from m3fm.training import train

    data = write_cov_ctr(tmp_path / "data")
    real = streaming.load_image

    def crashing(spec, path, cache):
        if path.name == "train-1.png":
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(spec, path, cache)

    monkeypatch.setattr(streaming, "load_image", crashing)
    monkeypatch.setattr("m3fm.alignment.task.load_image", crashing)
    overrides = dict(pair.split("=", 1) for pair in tiny_overrides(
        "train.max_steps=2", "data.workers=1")[1::2])
    recipe = load_recipe("cov-ctr-align", overrides)
    task = AlignmentTask(recipe, data)
    result = train(task.training_task(str(data)), recipe.train, tmp_path / "run")
    assert result.step == 2 and math.isfinite(result.loss)
    assert list(task.skipped) == [str(data / "images" / "train-1.png")]
    assert "process reading it died" in task.skipped[str(data / "images" / "train-1.png")]
