"""MkDocs hook: give the API reference a source tree shaped like the import namespace.

The fixed layout maps three folders (core/, plugins/, registry/) onto one package, ``m3fm``.
Griffe, which reads the sources for the API reference, finds packages by folder, so this hook
assembles ``build/docs-namespace/m3fm/`` from symbolic links before the pages are rendered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = REPO / "build" / "docs-namespace"
SUBPACKAGES = {"plugins": REPO / "plugins", "registry": REPO / "registry"}


def on_startup(command, dirty):
    package = NAMESPACE / "m3fm"
    shutil.rmtree(NAMESPACE, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (REPO / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in SUBPACKAGES.items():
        (package / name).symlink_to(folder)
