"""Labels as plugin entries (`m3fm_labels()`, plugin API 1.5): the merged registry view, prompt
resolution with its fallback on the anchor language, and diagnosis of a label that only a
modality package declares, in-process and from an installed third-party package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli
from pydantic import ValidationError

from m3fm.diagnosis.zeroshot import PromptClassifier, resolve_labels
from m3fm.registry import (
    LabelPrompts,
    LabelSpec,
    PluginConflictError,
    PluginRegistry,
    UnknownNameError,
    get_registry,
    hookimpl,
)
from m3fm.registry.testing import ConformanceError, check_label, label_coverage

SAMPLE = REPO / "plugins" / "samples" / "cxr.png"
PLAQUE = LabelPrompts(positive=("Calcified pleural plaques.",),
                      negative=("No pleural plaques.",))


def _label(label: str = "pleural_plaque", modalities=("cxr",), **prompts: LabelPrompts
           ) -> LabelSpec:
    return LabelSpec(id=label, modalities=modalities, description="Pleural plaque",
                     prompts=prompts or {"en": PLAQUE})


def _labels_plugin(name: str, *labels: LabelSpec) -> types.ModuleType:
    module = types.ModuleType(name)
    module.m3fm_labels = hookimpl(lambda: list(labels))
    return module


def _installed(*plugins: types.ModuleType) -> PluginRegistry:
    """The process-wide registry (the built-in plugins) with `plugins` added."""
    registry = get_registry()
    for plugin in plugins:
        registry.add_plugin(plugin, plugin.__name__, package=f"pkg-{plugin.__name__}",
                            version="1.0")
    return registry


# The spec ----------------------------------------------------------------------------------


def test_a_label_needs_anchor_language_prompts_and_one_line():
    with pytest.raises(ValidationError, match="anchor language 'en'"):
        LabelSpec(id="plaque", prompts={"zh": PLAQUE})
    with pytest.raises(ValidationError, match="one line"):
        LabelSpec(id="plaque", description="two\nlines", prompts={"en": PLAQUE})
    assert LabelSpec(id="plaque", prompts={"en": PLAQUE}).modalities == ()  # any modality


# The merged registry view ------------------------------------------------------------------


def test_built_in_labels_are_plugin_entries_owned_by_their_modalities():
    registry = get_registry()
    assert registry.plugins["cxr"].provides["label"][0] == "atelectasis"
    assert registry.plugins["ct"].provides["label"] == ["covid19"]
    covid = registry.label("covid19")  # cxr and ct both declare it, with the same prompts
    assert set(covid.modalities) == {"ct", "cxr"} and set(covid.prompts) == {"en"}
    assert registry.modality_labels("cxr") == registry.modality("cxr").labels
    assert registry.modality_labels("ct") == ("covid19",)


def test_entries_of_one_label_merge_modalities_and_languages():
    chinese = _label(modalities=("ct",), en=PLAQUE,
                     zh=LabelPrompts(positive=("胸膜斑。",), negative=("未见胸膜斑。",)))
    registry = _installed(_labels_plugin("plaque", _label()),
                          _labels_plugin("plaque_zh", chinese))
    merged = registry.label("pleural_plaque")
    assert merged.modalities == ("cxr", "ct") and set(merged.prompts) == {"en", "zh"}
    assert merged.description == "Pleural plaque"
    assert registry.modality_labels("cxr")[-1] == "pleural_plaque"
    assert registry.modality_labels("ct") == ("covid19", "pleural_plaque")
    assert registry.label_prompts("pleural_plaque", "zh") == (["胸膜斑。"], ["未见胸膜斑。"], "zh")


def test_a_label_for_any_modality_joins_every_modality():
    registry = _installed(_labels_plugin("anywhere", _label(modalities=())))
    assert "pleural_plaque" in registry.modality_labels("ct")
    assert "pleural_plaque" in resolve_labels("cxr", None)


def test_two_plugins_giving_one_label_different_english_prompts_is_an_error_naming_both():
    other = _label(en=LabelPrompts(positive=("Pleural plaques.",), negative=("None.",)))
    registry = _installed(_labels_plugin("first", _label()), _labels_plugin("second", other))
    with pytest.raises(PluginConflictError, match=(
            r"label 'pleural_plaque' has different 'en' prompts from more than one plugin: "
            r"first \(pkg-first 1.0\) and second \(pkg-second 1.0\)")):
        registry.label("pleural_plaque")
    with pytest.raises(PluginConflictError):
        registry.label_prompts("pleural_plaque", "en")
    assert registry.label_prompts("effusion", "en")[2] == "en"  # the others still work


def test_unknown_label_lists_the_declared_ones():
    with pytest.raises(UnknownNameError, match="unknown label 'plaque'; declared: atelectasis"):
        get_registry().label("plaque")
    with pytest.raises(UnknownNameError, match="unknown label for language 'zh': 'fracture'"):
        get_registry().label_prompts("fracture", "zh")


# Prompt resolution and the fallback ----------------------------------------------------------


def test_a_language_without_prompts_for_a_label_falls_back_on_the_anchor_language():
    registry = _installed(_labels_plugin("plaque", _label()))
    assert registry.label_prompts("pleural_plaque", "zh") == (
        list(PLAQUE.positive), list(PLAQUE.negative), "en")
    # A language plugin's own prompts (LanguageSpec.label_prompts, templates) still come first.
    assert registry.label_prompts("covid19", "zh")[2] == "zh"
    assert registry.label_prompts("effusion", "zh")[0][0] == "可见胸腔积液。"


class _RecordingEmbedder:
    """Embeds a text by its length, and records the language each text was embedded as."""

    logit_scale = 10.0

    def __init__(self) -> None:
        self.languages: dict[str, str] = {}

    def embed_texts(self, texts, lang):
        self.languages.update(dict.fromkeys(texts, lang))
        return torch.nn.functional.normalize(
            torch.tensor([[len(t), 1.0, 0.0] for t in texts]), dim=1)


def test_the_classifier_embeds_fallback_prompts_as_their_own_language_and_says_so():
    _installed(_labels_plugin("plaque", _label()))
    embedder = _RecordingEmbedder()
    classifier = PromptClassifier(embedder, ["effusion", "pleural_plaque"], "zh")
    assert classifier.prompt_languages == {"effusion": "zh", "pleural_plaque": "en"}
    assert embedder.languages["Calcified pleural plaques."] == "en"
    assert embedder.languages["可见胸腔积液。"] == "zh"
    assert classifier.probabilities(torch.eye(3)[:2]).shape == (2, 2)


# The conformance kit -----------------------------------------------------------------------


def test_the_kit_checks_label_entries_and_lists_missing_translations_as_warnings():
    assert check_label(_label()) == ["label prompts"]
    blank = _label(en=LabelPrompts(positive=(" ",), negative=("No plaque.",)))
    with pytest.raises(ConformanceError, match="label 'pleural_plaque' has an empty 'en' prompt"):
        check_label(blank)
    assert label_coverage() == []  # the built-in labels have prompts in every built-in language
    _installed(_labels_plugin("plaque", _label()))
    assert label_coverage() == [
        "label 'pleural_plaque' (cxr) has no 'zh' prompts; diagnosis in 'zh' uses the 'en' ones"]


def test_a_modality_label_no_language_can_prompt_fails_the_coverage_check():
    registry = get_registry()
    cxr = registry.modality("cxr")
    module = types.ModuleType("mystery")
    module.m3fm_modalities = hookimpl(lambda: [cxr.model_copy(update={
        "name": "mystery", "labels": ("mystery_sign",)})])
    _installed(module)
    with pytest.raises(ConformanceError, match="label 'mystery_sign' of modality 'mystery'"):
        label_coverage()


# Diagnosis with the bundled model ------------------------------------------------------------


def test_a_label_only_a_modality_package_declares_is_diagnosed_in_any_language(capsys):
    _installed(_labels_plugin("plaque", _label()))
    code, out, err = run_cli(capsys, "run", "--plugin", "cxr", "--lang", "zh", "--no-report",
                             "--labels", "pleural_plaque,effusion", "--json", str(SAMPLE))
    assert code == 0, err
    result = json.loads(out)
    assert 0 < result["diagnosis"]["pleural_plaque"] < 1
    assert result["prompt_languages"] == {"pleural_plaque": "en", "effusion": "zh"}
    code, out, err = run_cli(capsys, "run", "--plugin", "cxr", "--lang", "zh", "--no-report",
                             "--labels", "pleural_plaque,effusion", str(SAMPLE))
    assert code == 0, err
    assert "  pleural_plaque: 0." in out and out.count("en prompts") == 1
    # the bundled model was validated on covid19 only: it vouches for neither label
    assert "(en prompts, unvalidated)" in out and out.count("(unvalidated)") == 1


def test_plugins_list_warns_about_missing_translations(capsys):
    _installed(_labels_plugin("plaque", _label()))
    code, _, err = run_cli(capsys, "plugins", "list")
    assert code == 0
    assert ("m3fm: warning: label 'pleural_plaque' (cxr) has no 'zh' prompts; diagnosis in "
            "'zh' uses the 'en' ones") in err
    code, _, err = run_cli(capsys, "plugins", "list", "--no-check")
    assert code == 0 and "warning" not in err


def test_a_function_named_like_a_misspelt_hook_is_a_warning(capsys):
    plugin = types.ModuleType("typo")
    plugin.m3fm_language = hookimpl(lambda: [])  # the hook is m3fm_languages
    plugin.m3fm_labels_for_tests = lambda: []  # a helper, not a typo
    info = _installed(plugin).plugins["typo"]
    assert info.status == "ok"
    assert info.warnings == ["function 'm3fm_language' is never called: did you mean the hook "
                             "'m3fm_languages'?"]
    code, _, err = run_cli(capsys, "plugins", "list", "--no-check")
    assert code == 0 and "plugin 'typo' (pkg-typo 1.0): function 'm3fm_language'" in err


PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "m3fm-plaque-labels"
        version = "0.1.0"

        [project.entry-points.m3fm]
        plaque-labels = "m3fm_plaque"

        [tool.setuptools]
        py-modules = ["m3fm_plaque"]
    """,
    "m3fm_plaque.py": """
        from m3fm.registry import LabelPrompts, LabelSpec, hookimpl

        @hookimpl
        def m3fm_labels():
            return [LabelSpec(
                id="pleural_plaque", modalities=("cxr",), description="Pleural plaque",
                prompts={"en": LabelPrompts(positive=("Calcified pleural plaques.",),
                                            negative=("No pleural plaques.",))},
            )]
    """,
}


def test_an_installed_package_with_only_labels_is_diagnosed_with_english_prompts(tmp_path):
    source, site = tmp_path / "src", tmp_path / "site"
    for name, text in PACKAGE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(textwrap.dedent(text))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True, capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-c", "from m3fm.cli import main; main()", "run", "--plugin", "cxr",
         "--lang", "zh", "--no-report", "--labels", "pleural_plaque", "--json", str(SAMPLE)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed["diagnosis"]) == {"pleural_plaque"}
    assert 0 < printed["diagnosis"]["pleural_plaque"] < 1
    assert printed["prompt_languages"] == {"pleural_plaque": "en"}
    assert Path(printed["input"]) == SAMPLE
