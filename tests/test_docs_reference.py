"""The recipe reference (docs/reference/recipes.md) documents every recipe field and every
shipped recipe, and the recipes and catalog entry shown in the authoring guide are valid."""

from __future__ import annotations

import importlib.util
import re
import tomllib
import typing
from typing import Any

import pytest
import yaml
from conftest import REPO
from pydantic import BaseModel

from m3fm import __version__
from m3fm.generation.reporting import ReportModelConfig
from m3fm.recipes import RECIPE_STAGES, available_recipes, load_recipe, recipe_path
from m3fm.registry import PLUGIN_API_VERSION
from m3fm.registry.catalog import CatalogEntry, read_entry

PAGE = REPO / "docs" / "reference" / "recipes.md"
HOOK = REPO / "docs" / "hooks_recipes.py"
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def rendered() -> str:
    """The reference page as MkDocs renders it: the hook's tables in place of its markers."""
    spec = importlib.util.spec_from_file_location("hooks_recipes", HOOK)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook.on_page_markdown(PAGE.read_text(encoding="utf-8"), page=None)


def _nested(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_nested, typing.get_args(annotation))), None)


def dotted_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field a user can write, by dotted path; list entries as `sources[].path`."""
    paths = []
    for name, field in model.model_fields.items():
        inner = _nested(field.annotation)
        if inner is not None and typing.get_origin(field.annotation) not in (tuple, list):
            paths += dotted_fields(inner, f"{prefix}{name}.")
            continue
        paths.append(f"{prefix}{name}")
        if inner is not None:
            paths += dotted_fields(inner, f"{prefix}{name}[].")
    return paths


def _keys(data: dict, prefix: str = "") -> list[str]:
    """The dotted keys a recipe file sets."""
    keys = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys += _keys(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            keys.append(f"{prefix}{key}")
            for item in value:
                keys += _keys(item, f"{prefix}{key}[].")
        else:
            keys.append(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("model", [*RECIPE_STAGES.values(), CatalogEntry],
                         ids=lambda model: model.__name__)
def test_every_field_is_in_the_reference(model, rendered):
    missing = [path for path in dotted_fields(model) if f"| `{path}` |" not in rendered]
    assert not missing, f"{PAGE.name} lacks {model.__name__} fields: {missing}"


def test_every_section_of_a_report_model_config_is_in_the_reference(rendered):
    """Its nested sections link to the recipe tables of the same models, tested above."""
    for name in ReportModelConfig.model_fields:
        assert f"| `{name}` |" in rendered or f"### `[{name}]`" in rendered, name


@pytest.mark.parametrize("name", available_recipes())
def test_every_shipped_recipe_is_in_the_table_with_its_stage_and_version(name, rendered):
    recipe = load_recipe(name)
    assert re.search(rf"^\| `{re.escape(name)}` \| {recipe.stage} \| {recipe.version} \|",
                     rendered, re.MULTILINE), f"{name} is missing from the shipped-recipes table"
    documented = {path for model in RECIPE_STAGES.values() for path in dotted_fields(model)}
    used = _keys(tomllib.loads(recipe_path(name).read_text(encoding="utf-8")))
    assert set(used) <= documented, set(used) - documented


def test_the_page_is_fully_rendered_into_well_formed_tables(rendered):
    assert "<!-- m3fm-config" not in rendered
    header_cells = None
    for line in rendered.splitlines():
        if not line.startswith("|"):
            header_cells = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        header_cells = header_cells or cells
        assert cells == header_cells, f"{cells - 1} cells, not {header_cells - 1}: {line}"


def test_mkdocs_renders_the_page_with_the_hook():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "docs/hooks_recipes.py" in config["hooks"]
    assert "reference/recipes.md" in yaml.safe_dump(config["nav"])
    assert "authoring.md" in yaml.safe_dump(config["nav"])


def test_the_recipes_and_catalog_entry_in_the_authoring_guide_are_valid(tmp_path):
    blocks = TOML_BLOCK.findall((REPO / "docs" / "authoring.md").read_text(encoding="utf-8"))
    recipes = [block for block in blocks if re.search(r"^stage = ", block, re.MULTILINE)]
    entries = [block for block in blocks if re.search(r"^min_api = ", block, re.MULTILINE)]
    assert len(recipes) >= 2 and len(entries) == 1
    for number, block in enumerate(recipes):
        path = tmp_path / f"recipe-{number}.toml"
        path.write_text(block, encoding="utf-8")
        load_recipe(str(path))
    entry = tmp_path / "ko.toml"
    entry.write_text(entries[0], encoding="utf-8")
    assert read_entry(entry).name == entry.stem


def test_pages_quote_the_real_version_line():
    """Getting started shows what `m3fm version` prints, generated when the site is built."""
    spec = importlib.util.spec_from_file_location("hooks_version",
                                                  REPO / "docs" / "hooks_version.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (REPO / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert hook.MARKER in page and "plugin_api=" not in page
    rendered = hook.on_page_markdown(page, page=None)
    assert f"plugin_api={PLUGIN_API_VERSION} " in rendered and f"m3fm={__version__} " in rendered
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "docs/hooks_version.py" in config["hooks"]


def test_the_cli_reference_shows_no_click_sentinel():
    """mkdocs-click 0.9 prints click 8.3's UNSET marker; the hook shows None instead."""
    spec = importlib.util.spec_from_file_location("hooks_cli", REPO / "docs" / "hooks_cli.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    row = "<td><code>--json</code></td><td>boolean</td><td><code>Sentinel.UNSET</code></td>"
    assert hook.on_page_content(row, page=None) == row.replace("Sentinel.UNSET", "None")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "docs/hooks_cli.py" in config["hooks"]
