"""The plugin catalog: every shipped entry is valid, a wrong one is named, and the CLI lists it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from m3fm.registry import ConfigError, get_registry
from m3fm.registry import catalog as catalog_module
from m3fm.registry.catalog import CATALOG_DIR, catalog, read_entry

ENTRY = """name = "{name}"
kind = "language"
description = "A language."
package = "m3fm-{name}"
module = "{module}"
min_api = "{min_api}"
homepage = "https://example.org/{name}"
maintainers = ["A Lab"]
"""


@pytest.mark.parametrize("path", sorted(CATALOG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_entry_follows_the_schema_and_names_a_provided_plugin(path):
    entry = read_entry(path)
    assert path.stem == entry.name
    if entry.package == "m3fm" or entry.installed():  # a third party's need not be installed
        provided = {p.name for p in get_registry().all_provided() if p.kind == entry.kind}
        assert entry.name in provided


def test_a_wrong_entry_names_its_file_and_field(tmp_path):
    bad = tmp_path / "xx.toml"
    bad.write_text(ENTRY.format(name="xx", module="m", min_api="one"))
    with pytest.raises(ConfigError, match=r"xx\.toml: field min_api: .*'one' is not a version"):
        read_entry(bad)
    bad.write_text(ENTRY.format(name="xx", module="m", min_api="1.0") + "licence = 'MIT'\n")
    with pytest.raises(ConfigError, match=r"xx\.toml: field licence: Extra inputs"):
        read_entry(bad)


def test_available_lists_installed_missing_and_incompatible_plugins(capsys, monkeypatch,
                                                                   tmp_path: Path):
    for path in CATALOG_DIR.glob("*.toml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "ko.toml").write_text(ENTRY.format(name="ko", module="m3fm_ko", min_api="1.0"))
    (tmp_path / "vi.toml").write_text(ENTRY.format(name="vi", module="json", min_api="9.0"))
    monkeypatch.setattr(catalog_module, "CATALOG_DIR", tmp_path)
    assert [e.name for e in catalog()][:4] == ["en", "es", "ko", "vi"]
    code, stdout, _ = run_cli(capsys, "plugins", "available", "--json")
    assert code == 0
    status = {row["name"]: row["status"] for row in json.loads(stdout)}
    assert status["zh"] == "installed" and status["ko"] == "not installed"
    assert status["vi"] == "installed, incompatible (needs plugin API 9.0)"
