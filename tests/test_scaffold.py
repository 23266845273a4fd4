"""`m3fm plugins new`: the scaffolded package installs, is discovered, and passes its tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_cli


def test_new_refuses_a_bad_name_and_an_existing_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plugins", "new", "Korean!", "--kind", "language")
    assert code == 2 and "must be 2-40 lower-case letters" in err
    code, _, err = run_cli(capsys, "plugins", "new", "ko", "--kind", "language", "--dir",
                           str(tmp_path))
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_new_writes_a_complete_package(capsys, tmp_path):
    target = tmp_path / "m3fm-ko"
    code, stdout, _ = run_cli(capsys, "plugins", "new", "ko", "--kind", "language", "--dir",
                              str(target))
    assert code == 0 and "pip install -e" in stdout
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "m3fm_ko/__init__.py", "tests/test_conformance.py"}
    assert '[project.entry-points.m3fm]\nko = "m3fm_ko"' in (target / "pyproject.toml").read_text()


def test_a_modality_scaffold_ships_a_sample_image_as_package_data(capsys, tmp_path):
    target = tmp_path / "m3fm-scan"
    assert run_cli(capsys, "plugins", "new", "scan", "--kind", "modality", "--dir",
                   str(target))[0] == 0
    sample = target / "m3fm_scan" / "samples" / "sample.png"
    assert sample.read_bytes().startswith(b"\x89PNG")
    assert 'm3fm_scan = ["samples/*.png"]' in (target / "pyproject.toml").read_text()
    assert 'SAMPLE_FILES = (Path(__file__).parent / "samples" / "sample.png",)' in (
        target / "m3fm_scan" / "__init__.py").read_text()


def _m3fm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m3fm.cli", *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["language", "modality"])
def test_a_scaffolded_plugin_installs_and_passes_its_own_tests(kind, capsys, tmp_path):
    name = f"scaffolded_{kind}"
    target = tmp_path / "plugin"
    assert run_cli(capsys, "plugins", "new", name, "--kind", kind, "--dir", str(target))[0] == 0
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(target)],
                   check=True, capture_output=True)
    try:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                               cwd=target, capture_output=True, text=True, check=False)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        listed = json.loads(_m3fm("plugins", "list", "--json").stdout)
        assert {"name": name, "kind": kind, "plugin": name, "status": "ok"} in [
            {k: row[k] for k in ("name", "kind", "plugin", "status")} for row in listed]
        if kind == "modality":  # run knows the plugin; the bundled model has no tower for it
            sample = tmp_path / "x.png"
            sample.write_bytes(b"")
            ran = _m3fm("run", "--plugin", name, str(sample))
            assert ran.returncode == 2 and f"no {name!r} image tower" in ran.stderr
    finally:
        subprocess.run([*pip, "uninstall", "-y", f"m3fm-{name.replace('_', '-')}"], check=True,
                       capture_output=True)
