"""`m3fm plugins`: list, show, scaffold and find plugins."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

import m3fm
from m3fm.cli.app import PathArg, cli, err_console, print_json, table
from m3fm.registry import PLUGIN_API_VERSION, UnknownNameError

if TYPE_CHECKING:
    from m3fm.plugin_checks import Verdicts


@cli.group()
def plugins() -> None:
    """Inspect installed plugins (modalities, languages, dataset formats)."""


PROBLEM_CHARS = 300
"""A failed check's problem is cut to this length in `plugins list`: one readable status."""


def _plugin_rows(verdicts: Verdicts | None) -> list[dict[str, str]]:
    """One row per provided name, then one per plugin that failed to load.

    With the conformance kit's `verdicts`, a modality or language failing a check has the
    status ``incompatible: <check>: <problem>``.
    """
    from m3fm.registry import get_registry

    registry = get_registry()
    rows = []
    for provided in registry.all_provided():
        others = [
            p.plugin.name for p in registry.providers(provided.kind, provided.name)
            if p.plugin is not provided.plugin
        ]
        status = f"conflict with {', '.join(others)}" if others else "ok"
        failure = (verdicts.failure(provided.kind, provided.name, provided.plugin.name)
                   if verdicts is not None else None)
        if failure is not None:
            check, problem = failure
            if len(problem) > PROBLEM_CHARS:
                problem = problem[:PROBLEM_CHARS - 1] + "…"
            status = f"incompatible: {check}: {problem}"
        rows.append({
            "name": provided.name,
            "kind": provided.kind,
            "plugin": provided.plugin.name,
            "source": provided.plugin.source,
            "status": status,
        })
    for info in registry.plugins.values():
        if info.status != "ok":
            rows.append({
                "name": info.name, "kind": "plugin", "plugin": info.name,
                "source": info.source, "status": f"{info.status}: {info.error}",
            })
    return rows


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--check", "force_check", is_flag=True,
              help="Run the conformance kit even when its cached verdicts still apply.")
@click.option("--no-check", is_flag=True,
              help="Skip the conformance kit: a plugin that loads yet breaks the contract is "
              "then listed as ok.")
def plugins_list(as_json: bool, force_check: bool, no_check: bool) -> None:
    """List every modality, language and dataset format, with the plugin that provides it.

    Plugins that failed to load or need another plugin-API version are listed with the reason.
    Each modality and language is also put through the conformance kit on the samples it ships
    (a language without sample reports on its own prompts, a modality without sample files on
    what needs no file); one that fails is listed as ``incompatible: <check>: <problem>``.  The
    kit's verdicts are cached in the user's cache folder and reused until an installed plugin
    or m3fm changes (`--check` runs it anyway).  Labels a language has no prompts for (it
    falls back to English ones) and functions named like a misspelt hook (``m3fm_language``)
    are warnings on stderr.
    """
    if force_check and no_check:
        raise click.UsageError("--check and --no-check exclude each other")
    found = None if no_check else _verdicts(force_check)
    rows = _plugin_rows(found)
    if as_json:
        print_json(rows)
    else:
        table(
            f"m3fm {m3fm.__version__} plugins (plugin API {PLUGIN_API_VERSION})",
            ["name", "kind", "plugin", "source", "status"],
            [list(row.values()) for row in rows],
        )
    for warning in _warnings(found):
        click.echo(f"m3fm: warning: {warning}", err=True)


def _verdicts(force: bool) -> Verdicts:
    """The kit's verdicts, cached or fresh; a spinner on a terminal while the kit runs."""
    from m3fm.plugin_checks import verdicts
    from m3fm.registry import get_registry

    waiting = (err_console.status("Running the conformance kit on each plugin…")
               if err_console.is_terminal else contextlib.nullcontext())
    with waiting:
        return verdicts(get_registry(), force=force)


def _warnings(verdicts: Verdicts | None) -> list[str]:
    """What loaded but looks wrong: functions named like a misspelt hook; with the kit's
    `verdicts`, also labels that a language has no prompts of its own for (diagnosis there
    falls back to the anchor language's), or, as one line, why the labels cannot all be
    prompted."""
    from m3fm.registry import get_registry

    registry = get_registry()
    found = [f"{info.owner}: {warning}" for info in registry.plugins.values()
             for warning in info.warnings]
    return found + (verdicts.label_warnings if verdicts is not None else [])


def _describe(kind: str, spec: object) -> dict[str, object]:
    """A spec's declared data, without its callables."""
    data = {
        key: value for key, value in spec.model_dump().items()  # type: ignore[attr-defined]
        if not callable(value)
    }
    return {"kind": kind, **data}


def _describe_label(label: str) -> dict[str, object]:
    """A label as all plugins declare it together, who declares it, and in which languages
    diagnosis has prompts of its own (the others fall back to the anchor language's)."""
    from m3fm.registry import get_registry

    registry = get_registry()
    spec = registry.label(label)
    prompted = [code for code in registry.names("language")
                if registry.label_prompts(label, code)[2] == code]
    return _describe("label", spec) | {
        "plugins": [entry.plugin.name for entry in registry.label_entries(label)],
        "prompt_languages": prompted,
    }


@plugins.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["modality", "language"]), required=True,
              help="What the plugin provides.")
@click.option("--dir", "directory", type=PathArg, help="Where to write it; default ./m3fm-NAME.")
def plugins_new(name: str, kind: str, directory: Path | None) -> None:
    """Write a new plugin package: pyproject with the entry point, the spec, README and a
    conformance test. It passes its own tests right after `pip install -e DIR`."""
    from m3fm.scaffold import new_plugin

    target = new_plugin(name, kind, directory)
    click.echo(f"wrote {kind} plugin {name!r} in {target}; next: pip install -e "
               f"'{target}[test]' && pytest {target}")


@plugins.command("available")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_available(as_json: bool) -> None:
    """List the plugins the catalog knows, whether each is installed and fits this release."""
    from m3fm.registry.catalog import catalog

    rows = []
    for entry in catalog():
        status = ("installed" if entry.installed() else "not installed") + (
            "" if entry.compatible(PLUGIN_API_VERSION) else
            f", incompatible (needs plugin API {entry.min_api})")
        rows.append({"name": entry.name, "kind": entry.kind, "package": entry.package,
                     "status": status, "description": entry.description,
                     "homepage": str(entry.homepage)})
    if as_json:
        print_json(rows)
        return
    table(f"plugin catalog (this m3fm implements plugin API {PLUGIN_API_VERSION})",
           ["name", "kind", "package", "status", "description"],
           [[row[c] for c in ("name", "kind", "package", "status", "description")]
            for row in rows])


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_show(name: str, as_json: bool) -> None:
    """Show what a modality, language, dataset format, label or plugin named NAME declares."""
    from m3fm.registry import KINDS, get_registry

    registry = get_registry()
    found = [
        _describe(provided.kind, provided.spec) | {"plugin": provided.plugin.name,
                                                  "source": provided.plugin.source}
        for kind in KINDS for provided in registry.providers(kind, name)
    ]
    if name in registry.label_ids():
        found.append(_describe_label(name))
    info = registry.plugins.get(name)
    if info is not None:
        found.append({"kind": "plugin", "name": info.name, "module": info.module,
                      "source": info.source, "status": info.status, "error": info.error,
                      "provides": info.provides})
    if not found:
        known = {n for kind in KINDS for n in registry.names(kind)} | set(registry.plugins)
        raise UnknownNameError("plugin, modality, language, dataset format or label", name,
                               [*known, *registry.label_ids()])
    if as_json:
        print_json(found)
        return
    for entry in found:
        table(f"{entry['kind']} {name}", ["field", "value"],
               [[key, json.dumps(value, ensure_ascii=False, default=str)]
                for key, value in entry.items() if key != "kind"])

