"""`pip install .` and `pip install -e .` must import the same modules from the same folders."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

LAYOUT = {"m3fm": "core", "m3fm.plugins": "plugins", "m3fm.registry": "registry"}


def _source_modules() -> dict[str, Path]:
    """Module name -> source file, as the fixed layout defines them."""
    modules = {}
    for package, folder in LAYOUT.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts
                     if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def test_every_layout_module_imports_from_its_folder():
    for name, path in _source_modules().items():
        assert importlib.import_module(name).__file__ == str(path), name


@pytest.mark.slow
def test_wheel_holds_exactly_the_layout_modules(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    [wheel] = tmp_path.glob("m3fm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in names if name.endswith(".py")
    }
    assert in_wheel == set(_source_modules())
    shipped = {path.name for path in (REPO / "core" / "recipes").glob("*.toml")}
    assert shipped and {f"m3fm/recipes/{name}" for name in shipped} <= set(names)
    known = {p.name for p in (REPO / "registry" / "known_plugins").glob("*.toml")}
    assert known and {f"m3fm/registry/known_plugins/{name}" for name in known} <= set(names)
    samples = {p.name for p in (REPO / "plugins" / "samples").glob("*.png")}
    assert samples and {f"m3fm/plugins/samples/{name}" for name in samples} <= set(names)
    templates = {p.name for p in (REPO / "core" / "scaffold" / "templates").glob("*.tmpl")}
    assert templates and {f"m3fm/scaffold/templates/{n}" for n in templates} <= set(names)
    bundled = REPO / "core" / "models" / "m3fm-small"
    files = {f"m3fm/models/{p.relative_to(bundled.parent)}" for p in bundled.rglob("*")
             if p.is_file()}
    assert files and files <= set(names)  # the default model ships in the wheel
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    ).decode()
    assert "[m3fm]" in entry_points and "ct = m3fm.plugins.ct" in entry_points
