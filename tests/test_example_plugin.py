"""The out-of-tree example plugin (docs/examples/m3fm-es) installs with pip, passes its own
tests, and goes through `m3fm benchmark --recipe` and `m3fm run --lang es` on the real data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import REPO

PLUGIN = REPO / "docs" / "examples" / "m3fm-es"


def _m3fm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m3fm.cli", *args], capture_output=True,
                          text=True)


@pytest.mark.slow
@pytest.mark.data
def test_the_spanish_plugin_installs_trains_runs_and_is_benchmarked(data_root, tmp_path):
    pip = [sys.executable, "-m", "pip", "--quiet"]
    installed_before = importlib.util.find_spec("m3fm_es") is not None
    if not installed_before:  # a developer's editable install is left as it is
        subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(PLUGIN)],
                       check=True, capture_output=True)
    try:
        own_tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN)],
            capture_output=True, text=True)
        assert own_tests.returncode == 0, own_tests.stdout
        listed = json.loads(_m3fm("plugins", "list", "--json").stdout)
        assert {(row["name"], row["kind"]) for row in listed} >= {
            ("es", "language"), ("cov-ctr-es", "dataset")}

        runs, out = tmp_path / "runs", tmp_path / "results"
        bench = _m3fm("benchmark", "--data", str(data_root), "--quick", "--runs", str(runs),
                      "--out", str(out), "--recipe", str(PLUGIN / "recipes" / "es-zeroshot.toml"))
        assert bench.returncode == 0, bench.stderr
        results = json.loads((out / "results.json").read_text())
        spanish = [row for row in results["report"] if row["language"] == "es"]
        assert {row["system"] for row in spanish} >= {"cov-ctr-es-zeroshot", "most-frequent"}
        across = [row for row in spanish if row["reference_language"] == "en"]
        assert across and all(row["CE-F1"] is not None for row in across)  # by its findings
        assert "reference_language" in (out / "results.md").read_text()
        block = next(b for b in results["diagnosis"] if b["model"] == "cov-ctr-es-align")
        assert ("zero-shot image", "es") in {(r["method"], r["language"]) for r in block["rows"]}
        assert "--recipe" in results["meta"]["command"]

        scan = next((data_root / "cov-ctr" / "images").iterdir())
        run = _m3fm("run", "--plugin", "ct", "--lang", "es", "--checkpoint",
                    str(runs / "quick" / "cov-ctr-es-zeroshot" / "final"), "--json", str(scan))
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.splitlines()[0])["language"] == "es"
    finally:
        if not installed_before:
            subprocess.run([*pip, "uninstall", "-y", "m3fm-es"], check=True,
                           capture_output=True)
