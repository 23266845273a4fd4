"""The plugin contract: registration, lookup errors, conflicts, API versions, broken plugins."""

from __future__ import annotations

import types

import pytest

from m3fm.registry import (
    PLUGIN_API_VERSION,
    LanguageSpec,
    PluginConflictError,
    PluginRegistry,
    UnknownNameError,
    hookimpl,
)


def _language(code: str) -> LanguageSpec:
    return LanguageSpec(
        code=code, name=code.upper(), pivot="en" if code != "en" else None,
        normalize=str.strip, split_sentences=lambda text: [text], tokenize_words=str.split,
        join_words=" ".join, metric_tokenizer="13a", finding_names={"effusion": "effusion"},
        positive_templates=("{finding} present",), negative_templates=("no {finding}",),
    )


def _plugin(name: str, *, languages=(), api: str | None = None, hook=None) -> types.ModuleType:
    module = types.ModuleType(name)
    if hook is None:
        def hook():
            return [_language(code) for code in languages]
    module.m3fm_languages = hookimpl(hook)
    if api is not None:
        module.M3FM_API = api
    return module


def test_lookup_returns_the_registered_spec():
    registry = PluginRegistry()
    registry.add_plugin(_plugin("one", languages=["xx"]), "one")
    assert registry.language("xx").name == "XX"
    assert registry.plugins["one"].provides == {"language": ["xx"]}


def test_unknown_name_lists_what_is_installed():
    registry = PluginRegistry()
    registry.add_plugin(_plugin("one", languages=["xx", "yy"]), "one")
    with pytest.raises(UnknownNameError, match=r"unknown language 'qq'; installed: xx, yy") as info:
        registry.language("qq")
    assert info.value.exit_code == 2
    with pytest.raises(UnknownNameError, match="installed: none"):
        registry.modality("ct")


def test_two_plugins_with_one_name_is_an_error_naming_both():
    registry = PluginRegistry()
    registry.add_plugin(_plugin("first", languages=["xx"]), "first", package="pkg-a", version="1.0")
    registry.add_plugin(_plugin("second", languages=["xx", "yy"]), "second")
    with pytest.raises(PluginConflictError, match=r"first \(pkg-a 1.0\) and second \(second\)"):
        registry.language("xx")
    assert registry.language("yy").code == "yy"  # the rest of the plugin still works


def test_incompatible_plugin_api_is_reported_and_skipped():
    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("future", languages=["xx"], api=">=2"), "future")
    assert info.status == "incompatible"
    assert f"requires m3fm plugin API >=2, this m3fm provides {PLUGIN_API_VERSION}" in info.error
    assert registry.names("language") == []


def test_compatible_plugin_api_is_accepted():
    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("now", languages=["xx"], api=">=1.0,<2"), "now")
    assert info.status == "ok"


def test_invalid_api_specifier_is_reported():
    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("bad", api="version one"), "bad")
    assert info.status == "failed" and "not a version specifier" in info.error


def test_hook_that_raises_is_reported_without_affecting_others():
    def broken():
        raise RuntimeError("model file missing")

    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("broken", hook=broken), "broken")
    registry.add_plugin(_plugin("fine", languages=["xx"]), "fine")
    assert info.status == "failed"
    assert "m3fm_languages() raised RuntimeError: model file missing" in info.error
    assert registry.names("language") == ["xx"]


def test_hook_returning_the_wrong_type_is_reported():
    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("wrong", hook=lambda: ["en"]), "wrong")
    assert info.status == "failed" and "must return a list of LanguageSpec" in info.error


def test_hook_with_unknown_argument_is_reported():
    def takes_config(config):
        return []

    registry = PluginRegistry()
    info = registry.add_plugin(_plugin("odd", hook=takes_config), "odd")
    assert info.status == "failed" and "invalid hook implementation" in info.error


def test_same_plugin_name_twice_is_refused():
    registry = PluginRegistry()
    registry.add_plugin(_plugin("one", languages=["xx"]), "one")
    info = registry.add_plugin(_plugin("one", languages=["yy"]), "one")
    assert info.status == "failed" and "already registered" in info.error


def test_spec_validation_rejects_bad_declarations():
    with pytest.raises(ValueError, match="lacks the '\\{finding\\}' slot"):
        _language("xx").model_copy(update={}).model_validate(
            {**_language("xx").__dict__, "positive_templates": ("always present",)}
        )
    with pytest.raises(ValueError, match="cannot pivot through itself"):
        LanguageSpec.model_validate({**_language("xx").__dict__, "pivot": "xx"})
