"""`m3fm plugins new`: write a complete, installable third-party plugin package.

The package has a pyproject with the `m3fm` entry point, the hook implementation with its spec
filled in with working defaults (built on m3fm's public API only) and samples for the
conformance kit (sample reports, or a generated sample image shipped as package data), a
README, and a test that runs the kit, so it passes its own tests right after ``pip install -e``.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from m3fm import __version__
from m3fm.registry import UsageError

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("modality", "language")
NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


def new_plugin(name: str, kind: str, directory: Path | None = None) -> Path:
    """Write the package for plugin `name` of `kind` into `directory` (default
    ``./m3fm-NAME``), which must not exist yet; return the directory."""
    if not NAME.match(name):
        raise UsageError(f"plugin name {name!r} must be 2-40 lower-case letters, digits or _, "
                         "starting with a letter (it becomes a Python module name)")
    if kind not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    target = directory or Path(f"m3fm-{name}")
    if target.exists():
        raise UsageError(f"{target} already exists; choose another --dir")
    module = f"m3fm_{name}"
    values = {
        "name": name, "kind": kind, "package": f"m3fm-{name.replace('_', '-')}",
        "module": module, "m3fm_version": __version__,
        "description": f"{name} {kind}",
        "package_data": "" if kind == "language" else (
            f'\n[tool.setuptools.package-data]\n{module} = ["samples/*.png"]  '
            "# the conformance kit's sample files\n"),
    }
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"m3fm_{name}/__init__.py": f"{kind}.py.tmpl",
        "tests/test_conformance.py": f"test_{kind}.py.tmpl",
    }
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)
        path.write_text(text, encoding="utf-8")
    if kind == "modality":
        _write_sample_image(target / module / "samples" / "sample.png")
    return target


def _write_sample_image(path: Path) -> None:
    """A small grey PNG (a bright disc on a gradient) for the modality's `sample_files`: a real
    file of a declared type, until the author ships a real image."""
    import numpy as np
    from PIL import Image

    rows, columns = np.mgrid[0:64, 0:80].astype(np.float32)
    picture = 40 + columns + 60 * (((rows - 32) / 20) ** 2 + ((columns - 40) / 24) ** 2 <= 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture.astype(np.uint8)).save(path)
