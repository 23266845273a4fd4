"""`m3fm run --resume` after a kill: the answered inputs are kept as written and not computed
again, a torn last line is cut off, and `--workers` loads inputs without changing results."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from batch_fixtures import (
    BATCH,
    SUBPROCESS_ENV,
    inputs_of,
    m3fm,
    pictures,
    reference_results,
    run_args,
    small_batch_model,
)
from conftest import run_cli

COUNT = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_batch_model(tmp_path_factory.mktemp("model") / "m3fm-small")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return pictures(tmp_path_factory.mktemp("images"), COUNT)


@pytest.fixture(scope="module")
def reference(model, images, tmp_path_factory) -> bytes:
    return reference_results(model, images[0].parent, tmp_path_factory.mktemp("ref") / "r.jsonl")


def _complete(raw: bytes) -> bytes:
    return raw[:raw.rfind(b"\n") + 1]


@pytest.mark.slow
def test_resume_after_kill_9_computes_only_the_missing_inputs(
        capsys, tmp_path, model, images, reference):
    out = tmp_path / "results.jsonl"
    args = run_args(model, images[0].parent, out)
    killed = subprocess.Popen(m3fm(*args), env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not out.exists() or out.read_bytes().count(b"\n") < BATCH:
            assert killed.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        killed.kill()  # SIGKILL: no cleanup runs
        killed.wait()
    kept = _complete(out.read_bytes())
    answered = kept.count(b"\n")
    assert BATCH <= answered < COUNT
    code, stdout, err = run_cli(capsys, *args, "--resume", "--json")
    assert code == 0, err
    assert inputs_of(stdout) == [str(path) for path in images[answered:]]  # only those ran
    final = out.read_bytes()
    assert final.startswith(kept) and final == reference


def test_resume_cuts_a_torn_last_line_and_appends_the_rest(capsys, tmp_path, model, images,
                                                           reference):
    out = tmp_path / "results.jsonl"
    lines = reference.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][:17])  # killed while writing line 5
    code, stdout, err = run_cli(capsys, *run_args(model, images[0].parent, out, "--resume",
                                                  "--json"))
    assert code == 0, err
    assert inputs_of(stdout) == [str(path) for path in images[4:]]
    assert out.read_bytes() == reference


def test_an_error_line_is_answered_and_nothing_left_exits_0(capsys, tmp_path, model, images):
    out = tmp_path / "results.jsonl"
    text = "".join(json.dumps({"input": str(path), "error": "could not read"}) + "\n"
                   for path in images)
    out.write_text(text)
    code, stdout, err = run_cli(capsys, *run_args(model, images[0].parent, out, "--resume"))
    assert code == 0 and stdout == "" and "every input already has a line" in err
    assert out.read_text() == text


def test_resume_refuses_a_line_that_is_not_a_result(capsys, tmp_path, model, images):
    out = tmp_path / "results.jsonl"
    out.write_text('{"input": "a.png", "error": "x"}\nnot json\n')
    code, _, err = run_cli(capsys, *run_args(model, images[0].parent, out, "--resume"))
    assert code == 1
    assert err.strip() == (f"m3fm: error: {out} line 2 is not a result of m3fm run; delete it "
                           "or run without --resume")


def test_resume_needs_out(capsys, images):
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--resume", str(images[0]))
    assert code == 2 and "--resume needs --out FILE" in err


def test_workers_give_the_results_of_one_process(capsys, tmp_path, model, images):
    printed = []
    for workers in ("0", "2"):
        code, stdout, err = run_cli(capsys, "run", "--plugin", "ct", "--no-report", "--json",
                                    "--checkpoint", str(model), "--workers", workers,
                                    str(images[0].parent), str(tmp_path / "missing.png"))
        assert code == 0, err
        printed.append(stdout)
    assert printed[0] == printed[1]
    assert len(printed[0].splitlines()) == COUNT + 1
