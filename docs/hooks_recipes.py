"""MkDocs hook: render the recipe and configuration reference from the pydantic models.

A page asks for a table with a marker line, ``<!-- m3fm-config: NAME -->``; NAME is one of
:data:`MODELS` (every field of that model and of the sections nested in it, with its dotted
path, type, default and description) or ``shipped-recipes`` (the recipes shipped with m3fm,
read with ``load_recipe``).  Nothing is typed twice, so the reference cannot drift from the
code; ``tests/test_docs_reference.py`` checks every field and recipe appears.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

MARKER = re.compile(r"^<!-- m3fm-config: ([\w-]+) -->$", re.MULTILINE)


def _models() -> dict[str, tuple[type[BaseModel], str]]:
    """Marker name → (model, what its sections are called in links from other tables)."""
    from m3fm.generation.reporting import ReportModelConfig
    from m3fm.recipes import AlignRecipe, GenerateRecipe
    from m3fm.registry.catalog import CatalogEntry

    return {
        "align-recipe": (AlignRecipe, "alignment recipes"),
        "generate-recipe": (GenerateRecipe, "generate recipes"),
        "report-model-config": (ReportModelConfig, "report-model config.json"),
        "catalog-entry": (CatalogEntry, "catalog entries"),
    }


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace every marker line of a page by the tables it names."""
    return render(markdown)


def render(markdown: str) -> str:
    """`markdown` with its marker lines replaced; an unknown marker is an error."""
    models = _models()
    seen: dict[type[BaseModel], tuple[str, str]] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "shipped-recipes":
            return shipped_recipes_table()
        if name not in models:
            known = ", ".join([*models, "shipped-recipes"])
            raise ValueError(f"unknown m3fm-config marker {name!r}; known: {known}")
        model, where = models[name]
        return "\n\n".join(model_sections(model, "", anchor=name, where=where, seen=seen))

    return MARKER.sub(replace, markdown)


def shipped_recipes_table() -> str:
    """One row per recipe shipped with m3fm: name, stage, version, description, stage 1."""
    from m3fm.recipes import available_recipes, load_recipe

    rows = ["| recipe | stage | version | description | alignment recipe |",
            "| --- | --- | --- | --- | --- |"]
    for name in available_recipes():
        recipe = load_recipe(name)
        align = getattr(recipe, "align", None)
        source = f"`{align.recipe}`" if align is not None and align.recipe else ""
        rows.append(f"| `{name}` | {recipe.stage} | {recipe.version} | "
                    f"{_cell(recipe.description)} | {source} |")
    return "\n".join(rows)


def model_sections(model: type[BaseModel], prefix: str, anchor: str, where: str = "",
                   title: str | None = None,
                   seen: dict[type[BaseModel], tuple[str, str]] | None = None) -> list[str]:
    """A table of `model`'s own fields (dotted paths under `prefix`), then one section per
    nested configuration model, headed `title` with id `anchor`.

    A nested model already rendered on the page (`seen`: model → anchor and link text) gets a
    link to that table instead of a second copy; `where` names this table in such links.
    """
    seen = {} if seen is None else seen
    heading = [f"### {title} {{#{anchor}}}"] if title is not None else []
    name = f"`{model.__module__}.{model.__qualname__}`"
    if model in seen:
        first_anchor, first_title = seen[model]
        return ["\n\n".join([*heading, f"{name}: {_summary(model)} The same fields as "
                                         f"[{first_title}](#{first_anchor})."])]
    if title is not None:
        seen[model] = (anchor, f"{title} in {where}")
    rows, nested = [], []
    for field_name, field in model.model_fields.items():
        path = f"{prefix}{field_name}"
        inner = _nested_model(field.annotation)
        if inner is not None and not _is_sequence(field.annotation):
            nested.append((inner, f"{path}.", f"{anchor}-{field_name}", f"`[{path}]`"))
            continue
        rows.append(_row(path, field))
        if inner is not None:  # a list of tables, such as data.sources
            nested.append((inner, f"{path}[].", f"{anchor}-{field_name}", f"`{path}` entries"))
    parts = [*heading, f"{name}: {_summary(model)}"]
    if rows:
        parts.append("\n".join(["| field | type | default | description |",
                                "| --- | --- | --- | --- |", *rows]))
    sections = ["\n\n".join(parts)]
    for inner, inner_prefix, inner_anchor, inner_title in nested:
        sections += model_sections(inner, inner_prefix, inner_anchor, where, inner_title, seen)
    return sections


def _row(path: str, field: FieldInfo) -> str:
    inner = _nested_model(field.annotation)
    description = field.description or (_summary(inner) if inner else "")
    kind = _type(field.annotation)
    constraints = _constraints(field)
    if constraints:
        kind = f"{kind}; {constraints}"
    return f"| `{path}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(description)} |"


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()).replace("``", "`")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The configuration model a field holds (directly or as a list of them), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (tuple, list)


def _type(annotation: Any) -> str:
    """A field's type as a recipe author reads it (TOML/YAML words, not Python's)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(f'"{arg}"' if isinstance(arg, str) else repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(arg) for arg in args)
    if origin in (tuple, list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return "(" + ", ".join(_type(arg) for arg in args) + ")"
        if args and _nested_model(args[0]) is args[0]:
            return "list of tables"
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {_type(args[0])} → {_type(args[1])}" if args else "table"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "table"
        if issubclass(annotation, Path):
            return "path"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                "HttpUrl": "URL"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _constraints(field: FieldInfo) -> str:
    """Bounds and lengths from the field's metadata: `> 1`, `at least 1 item`, …"""
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS.items():
            if getattr(item, attr, None) is not None:
                found.append(f"{sign} {getattr(item, attr)}")
        min_length = getattr(item, "min_length", None)
        if min_length:
            unit = "item" if _is_sequence(field.annotation) else "character"
            found.append(f"at least {min_length} {unit}{'s' * (min_length != 1)}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            found.append(f"matches `{pattern}`")
    return ", ".join(found)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "see its section" if isinstance(value, BaseModel) else _literal(value)
    if field.is_required():
        return "required"
    return _literal(field.default)


def _literal(value: Any) -> str:
    """A default as it would be written in a recipe."""
    if value is None:
        return "`None`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(_literal(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")
