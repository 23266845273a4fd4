"""`m3fm run` under torchrun: each rank takes its share, rank 0 merges the part files into
exactly the file one process writes, and a killed sharded run resumes from its part files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from batch_fixtures import (
    SUBPROCESS_ENV,
    inputs_of,
    pictures,
    reference_results,
    run_args,
    small_batch_model,
    torchrun,
)
from conftest import run_cli

from m3fm.batch_jobs import ResultsJob, Shard, merge_results, part_files, part_path
from m3fm.registry import UsageError

COUNT = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_batch_model(tmp_path_factory.mktemp("model") / "m3fm-small")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return pictures(tmp_path_factory.mktemp("images"), COUNT)


@pytest.fixture(scope="module")
def reference(model, images, tmp_path_factory) -> bytes:
    return reference_results(model, images[0].parent, tmp_path_factory.mktemp("ref") / "r.jsonl")


def _leave_killed_run(out: Path, reference: bytes, in_file: list[int]) -> list[int]:
    """What a 2-rank run killed midway leaves: rank 0 answered inputs 0 and 2 and was writing
    4, rank 1 answered 1; lines `in_file` are in FILE from an earlier resume. The indices of
    the inputs still to compute are returned."""
    lines = reference.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[index] for index in in_file))
    part_path(out, Shard(0, 2)).write_bytes(lines[0] + lines[2] + lines[4][:20])
    part_path(out, Shard(1, 2)).write_bytes(lines[1])
    return [index for index in range(len(lines)) if index not in {0, 1, 2, *in_file}]


def test_resume_merges_the_part_files_of_a_killed_sharded_run(capsys, tmp_path, model,
                                                              images, reference):
    out = tmp_path / "results.jsonl"
    missing = _leave_killed_run(out, reference, in_file=[5])
    code, stdout, err = run_cli(capsys, *run_args(model, images[0].parent, out, "--resume",
                                                  "--json"))
    assert code == 0, err
    assert inputs_of(stdout) == [str(images[index]) for index in missing]
    assert out.read_bytes() == reference and part_files(out) == []


def test_a_run_without_resume_discards_a_killed_run_s_part_files(capsys, tmp_path, model,
                                                                 images, reference):
    out = tmp_path / "results.jsonl"
    _leave_killed_run(out, reference, in_file=[])
    code, _, err = run_cli(capsys, *run_args(model, images[0].parent, out))
    assert code == 0, err
    assert out.read_bytes() == reference and part_files(out) == []


def test_ranks_share_the_unanswered_inputs_in_turn(tmp_path):
    listing = [Path(f"{index}.png") for index in range(7)]
    shares = []
    for rank in range(3):
        job = ResultsJob(None, False, Shard(rank, 3))
        job.answered = {"1.png", "4.png"}
        shares.append([path.name for path in job.pending(listing)])
    assert shares == [["0.png", "5.png"], ["2.png", "6.png"], ["3.png"]]  # of 0 2 3 5 6


@pytest.mark.parametrize(("size", "rank"), [("2", "2"), ("two", "0"), ("0", "0")])
def test_a_bad_torchrun_environment_is_a_usage_error(monkeypatch, size, rank):
    monkeypatch.setenv("WORLD_SIZE", size)
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(UsageError, match="start sharded runs with torchrun"):
        Shard.from_env()


def test_merge_orders_by_listing_and_keeps_unlisted_results_last(tmp_path):
    out, part = tmp_path / "r.jsonl", tmp_path / "part.jsonl"
    out.write_text('{"input": "gone.png"}\n{"input": "b.png"}\n')
    part.write_text('{"input": "c.png"}\n{"input": "a.png"}\n{"input": "torn')
    merge_results(out, [out, part], [Path("a.png"), Path("b.png"), Path("c.png")])
    assert inputs_of(out.read_text()) == ["a.png", "b.png", "c.png", "gone.png"]


@pytest.mark.slow
def test_two_ranks_write_the_file_of_one_process_and_resume_after_a_kill(
        tmp_path, model, images, reference):
    out = tmp_path / "merged.jsonl"
    args = run_args(model, images[0].parent, out)
    sharded = subprocess.run(torchrun(*args), env=SUBPROCESS_ENV, capture_output=True,
                             text=True, timeout=400, check=False)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert out.read_bytes() == reference and part_files(out) == []

    missing = _leave_killed_run(out, reference, in_file=[5])
    resumed = subprocess.run(torchrun(*args, "--resume", "--json"), env=SUBPROCESS_ENV,
                             capture_output=True, text=True, timeout=400, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(inputs_of(resumed.stdout)) == [str(images[index]) for index in missing]
    assert out.read_bytes() == reference and part_files(out) == []
