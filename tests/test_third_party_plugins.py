"""Third-party plugins, installed as real distributions and seen through the CLI.

A small package is written to a temporary folder and installed with pip into another
temporary folder that the CLI subprocess gets on its PYTHONPATH: the plugins reach m3fm only
through the ``m3fm`` entry-point group, exactly as a package from PyPI would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "m3fm-demo-plugins"
        version = "0.3.0"

        [project.entry-points.m3fm]
        demo-lang = "m3fm_demo.language"
        demo-broken = "m3fm_demo.broken"
        demo-future = "m3fm_demo.future"
        demo-raising = "m3fm_demo.raising"
        demo-dupe = "m3fm_demo.dupe"
        demo-misfits = "m3fm_demo.misfits"

        [tool.setuptools]
        packages = ["m3fm_demo"]
    """,
    "m3fm_demo/__init__.py": "",
    "m3fm_demo/language.py": """
        from m3fm.registry import LanguageSpec, hookimpl

        def spec(code):
            return LanguageSpec(
                code=code, name="Demo", pivot="en", normalize=str.strip,
                split_sentences=lambda text: [text], tokenize_words=str.split,
                join_words=" ".join, metric_tokenizer="13a",
                finding_names={"effusion": "fluido pleural"},
                positive_templates=("hay {finding}",), negative_templates=("sin {finding}",),
            )

        @hookimpl
        def m3fm_languages():
            return [spec("xx")]
    """,
    "m3fm_demo/broken.py": "raise ImportError('needs libfoo, which is not installed')\n",
    "m3fm_demo/future.py": """
        from m3fm.registry import hookimpl
        from m3fm_demo.language import spec

        M3FM_API = ">=9"

        @hookimpl
        def m3fm_languages():
            return [spec("yy")]
    """,
    "m3fm_demo/raising.py": """
        from m3fm.registry import hookimpl

        @hookimpl
        def m3fm_languages():
            raise RuntimeError("vocabulary file missing")
    """,
    "m3fm_demo/dupe.py": """
        from m3fm.registry import hookimpl
        from m3fm_demo.language import spec

        @hookimpl
        def m3fm_languages():
            return [spec("zh")]
    """,
    "m3fm_demo/misfits.py": """
        # Plugins that load fine but break the contract: the conformance kit finds them.
        from m3fm.registry import ModalitySpec, hookimpl
        from m3fm_demo.language import spec

        class Encoder:
            feature_dim = 8

            def __init__(self, width):
                self.width = width

            def eval(self):
                return self

            def __call__(self, batch):
                return batch.flatten(1)[:, : self.width]

        def load(path):
            import numpy as np
            import torch
            from PIL import Image

            pixels = np.asarray(Image.open(path).convert("L").resize((16, 16)), np.float32)
            return torch.from_numpy(pixels / 255)[None]

        def modality(name, width):
            return ModalitySpec(
                name=name, description="Demo scans", file_types=(".png",),
                slice_shape=(1, 16, 16), load=load, build_encoder=lambda _: Encoder(width),
                labels=("effusion",),
            )

        def split_sentences(text):
            raise RuntimeError("sentence model not downloaded")

        @hookimpl
        def m3fm_languages():
            shouting = spec("ww").model_copy(update={
                "normalize": lambda text: text.strip() + "!", "sample_reports": ("Sin fluido.",)})
            unsplittable = spec("vv").model_copy(update={"split_sentences": split_sentences})
            return [shouting, unsplittable]

        @hookimpl
        def m3fm_modalities():
            return [modality("demo-fine", 8), modality("demo-wide", 4)]
    """,
}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding the demo package installed by pip (not on sys.path of this process)."""
    source = tmp_path_factory.mktemp("src")
    for name, text in PACKAGE.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True, capture_output=True,
    )
    return site


def m3fm(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "250"}  # a table row per line
    return subprocess.run(
        [sys.executable, "-c", "from m3fm.cli import main; main()", *args],
        capture_output=True, text=True, env=env,
    )


@pytest.fixture(scope="module")
def rows(plugin_site) -> list[dict]:
    result = m3fm(plugin_site, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def listing(rows) -> dict[tuple[str, str], dict]:
    return {(row["kind"], row["name"]): row for row in rows}


def test_installed_plugin_is_listed_with_its_package(listing):
    row = listing["language", "xx"]
    assert row["status"] == "ok"
    assert row["source"] == "m3fm-demo-plugins 0.3.0"


def test_builtins_are_listed_beside_third_party_plugins(listing):
    for kind, name in [("modality", "cxr"), ("modality", "ct"), ("language", "en")]:
        assert listing[kind, name]["source"].startswith("m3fm ")


def test_plugin_that_fails_to_import_is_reported(listing):
    status = listing["plugin", "demo-broken"]["status"]
    assert status == "failed: import failed: ImportError: needs libfoo, which is not installed"


def test_plugin_needing_another_api_is_reported_incompatible(listing):
    assert listing["plugin", "demo-future"]["status"].startswith("incompatible: requires")
    assert ("language", "yy") not in listing


def test_plugin_whose_hook_raises_is_reported(listing):
    assert "vocabulary file missing" in listing["plugin", "demo-raising"]["status"]


def test_name_claimed_twice_is_shown_as_conflict(rows):
    statuses = {row["plugin"]: row["status"] for row in rows if row["name"] == "zh"}
    assert statuses == {"zh": "conflict with demo-dupe", "demo-dupe": "conflict with zh"}


INCOMPATIBLE = {
    ("language", "ww"): "incompatible: normalize is idempotent: "
                        "normalising 'Sin fluido.!' again changes it",
    ("language", "vv"): "incompatible: split_sentences: "
                        "raised RuntimeError: sentence model not downloaded",
    ("modality", "demo-wide"): "incompatible: encoder output: "
                               "a batch of 2 × (1, 16, 16) gave (2, 4)",
}


def test_plugin_that_loads_but_fails_the_kit_is_incompatible_with_the_first_failing_check(
        listing):
    for key, status in INCOMPATIBLE.items():
        assert listing[key]["status"] == status
        assert listing[key]["plugin"] == "demo-misfits"
    # The same plugin's conforming modality, checked without sample files, stays ok.
    assert listing["modality", "demo-fine"]["status"] == "ok"


def test_builtins_pass_the_kit(listing):
    for key in [("modality", "cxr"), ("modality", "ct"), ("language", "en")]:
        assert listing[key]["status"] == "ok"


def test_the_table_shows_the_same_statuses(plugin_site, rows):
    result = m3fm(plugin_site, "plugins", "list")
    assert result.returncode == 0, result.stderr
    table = [
        tuple(cell.strip() for cell in line.strip("│").split("│"))
        for line in result.stdout.splitlines() if line.startswith("│ ")
    ]
    assert table == [tuple(row.values()) for row in rows]
    assert sum(row[-1].startswith("incompatible: ") for row in table) == len(INCOMPATIBLE) + 1


def test_installed_plugin_resolves_by_name(plugin_site):
    result = m3fm(plugin_site, "plugins", "show", "xx", "--json")
    assert result.returncode == 0, result.stderr
    [shown] = json.loads(result.stdout)
    assert shown["name"] == "Demo" and shown["pivot"] == "en"


def test_conflicting_name_is_refused_naming_both(plugin_site, tmp_path):
    image = tmp_path / "slice.png"
    image.write_bytes(b"")
    result = m3fm(plugin_site, "run", "--plugin", "ct", "--lang", "zh", str(image))
    assert result.returncode == 1
    assert "language 'zh' is provided by more than one plugin" in result.stderr
    assert "demo-dupe (m3fm-demo-plugins 0.3.0)" in result.stderr and "zh (m3fm " in result.stderr
    assert "Traceback" not in result.stderr
