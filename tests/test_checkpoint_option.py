"""`--checkpoint` takes a model folder, or a training run's folder for its final/ model, and
says plainly when a folder holds no model at all."""

from __future__ import annotations

import json
import shutil

from conftest import run_cli

from m3fm.models import default_model_dir
from m3fm.registry import get_registry

SAMPLE = get_registry().modality("cxr").sample_files[0]


def test_a_training_run_folder_means_its_final_model(capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(default_model_dir(), run / "final")
    code, stdout, err = run_cli(capsys, "run", "--plugin", "cxr", "--no-report", "--json",
                                "--checkpoint", str(run), str(SAMPLE))
    assert code == 0, err
    assert f"using {run / 'final'}, the final model of the training run in {run}" in err
    assert "covid19" in json.loads(stdout)["diagnosis"]


def test_a_folder_without_a_model_is_not_called_the_wrong_kind_of_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--plugin", "cxr", "--checkpoint", str(tmp_path),
                           str(SAMPLE))
    assert code == 2 and "holds no m3fm model (no config.json)" in err
    assert "not a report model" not in err and len(err.strip().splitlines()) == 1
