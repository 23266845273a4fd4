"""`m3fm embed` into a JSON Lines file: resumed like `m3fm run`, sharded under torchrun, and a
.safetensors --out refused where it cannot work (resume, several ranks)."""

from __future__ import annotations

import json
import subprocess

import pytest
from batch_fixtures import SUBPROCESS_ENV, inputs_of, pictures, torchrun
from conftest import run_cli

from m3fm.models import default_model_dir

COUNT = 6


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return pictures(tmp_path_factory.mktemp("images"), COUNT)


def _embed(out, *extra: str) -> list[str]:
    return ["embed", "--checkpoint", str(default_model_dir()), "--plugin", "ct",
            "--out", str(out), *extra]


def test_json_lines_out_is_resumed_without_recomputing(capsys, tmp_path, images):
    folder = images[0].parent
    whole = tmp_path / "whole.jsonl"
    code, stdout, err = run_cli(capsys, *_embed(whole, str(folder)))
    assert code == 0, err
    assert f"{COUNT} embeddings in" in stdout
    lines = whole.read_text().splitlines()
    assert inputs_of(whole.read_text()) == [str(path) for path in images]
    assert len(json.loads(lines[0])["embedding"]) > 1

    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # torn by a kill
    code, _, err = run_cli(capsys, *_embed(partial, "--resume", str(folder)))
    assert code == 0, err
    resumed = partial.read_text().splitlines()
    assert resumed[:2] == lines[:2]  # kept as written, not recomputed
    assert inputs_of(partial.read_text()) == inputs_of(whole.read_text())
    _assert_same_vectors(resumed, lines)


def _assert_same_vectors(ours: list[str], theirs: list[str]) -> None:
    """The same vectors, up to float rounding: batches of other sizes sum in other orders."""
    for mine, other in zip(ours, theirs, strict=True):
        assert json.loads(mine)["embedding"] == pytest.approx(json.loads(other)["embedding"],
                                                              abs=1e-5)


@pytest.mark.parametrize("extra", [["--resume"], []])
def test_safetensors_out_cannot_be_resumed_or_sharded(capsys, tmp_path, images, monkeypatch,
                                                      extra):
    if not extra:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
    code, _, err = run_cli(capsys, *_embed(tmp_path / "v.safetensors", *extra, str(images[0])))
    assert code == 2 and "need a JSON Lines --out" in err


@pytest.mark.slow
def test_two_ranks_embed_what_one_process_embeds(capsys, tmp_path, images):
    folder = images[0].parent
    single = tmp_path / "single.jsonl"
    code, _, err = run_cli(capsys, *_embed(single, str(folder)))
    assert code == 0, err
    merged = tmp_path / "merged.jsonl"
    sharded = subprocess.run(torchrun(*_embed(merged, str(folder))), env=SUBPROCESS_ENV,
                             capture_output=True, text=True, timeout=400, check=False)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert inputs_of(merged.read_text()) == inputs_of(single.read_text())
    _assert_same_vectors(merged.read_text().splitlines(), single.read_text().splitlines())
