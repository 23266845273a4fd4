"""The command line: the front door, its errors and exit codes."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from m3fm.registry import PLUGIN_API_VERSION, get_registry, hookimpl


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("m3fm: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_verbs(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for verb in ["run", "train", "evaluate", "plugins", "preprocess", "data", "version"]:
        assert verb in out


def test_version_as_json(capsys):
    code, out, _ = run_cli(capsys, "version", "--json")
    info = json.loads(out)
    assert code == 0 and info["plugin_api"] == PLUGIN_API_VERSION and "torch" in info


def test_plugins_list_shows_the_builtins(capsys):
    code, out, _ = run_cli(capsys, "plugins", "list", "--json")
    provided = {(row["kind"], row["name"]): row["status"] for row in json.loads(out)}
    assert code == 0
    for key in [("modality", "cxr"), ("modality", "ct"), ("language", "en"), ("language", "zh")]:
        assert provided[key] == "ok"  # loaded, no conflict, and passed the conformance kit


def test_plugins_list_table_for_people(capsys):
    code, out, _ = run_cli(capsys, "plugins", "list")
    assert code == 0 and "cxr" in out and "modality" in out


class _Misfit:
    """A plugin whose language loads but normalises differently each time it is asked."""

    @hookimpl
    def m3fm_languages(self):
        english = get_registry().language("en")
        return [english.model_copy(update={"code": "xw", "normalize": lambda t: t + "!"})]


def test_plugins_list_shows_a_spec_failing_the_kit_as_incompatible(capsys, monkeypatch):
    import m3fm.cli

    get_registry().add_plugin(_Misfit(), "misfit")
    code, out, _ = run_cli(capsys, "plugins", "list", "--json")
    [row] = [row for row in json.loads(out) if row["name"] == "xw"]
    assert code == 0 and row["plugin"] == "misfit"
    assert row["status"].startswith("incompatible: normalize is idempotent: normalising ")
    monkeypatch.setattr(m3fm.cli.app.console, "width", 300)  # one line per row
    code, out, _ = run_cli(capsys, "plugins", "list")
    [line] = [line for line in out.splitlines() if line.startswith("│ xw ")]
    assert code == 0 and line.rstrip(" │").endswith(row["status"])
    code, out, _ = run_cli(capsys, "plugins", "list", "--json", "--no-check")
    assert [row["status"] for row in json.loads(out) if row["name"] == "xw"] == ["ok"]


def test_plugins_show_declares_shapes_and_labels(capsys):
    code, out, _ = run_cli(capsys, "plugins", "show", "ct", "--json")
    [ct] = [entry for entry in json.loads(out) if entry["kind"] == "modality"]
    assert code == 0 and ct["labels"] == ["covid19"] and len(ct["volume_shape"]) == 4


def test_plugins_show_a_label_with_who_declares_it_and_its_prompt_languages(capsys):
    code, out, _ = run_cli(capsys, "plugins", "show", "covid19", "--json")
    [label] = [entry for entry in json.loads(out) if entry["kind"] == "label"]
    assert code == 0 and set(label["modalities"]) == {"ct", "cxr"}
    assert {"ct", "cxr"} <= set(label["plugins"]) and "en" in label["prompts"]
    assert {"en", "zh"} <= set(label["prompt_languages"])


def test_plugins_show_unknown_name(capsys):
    code, _, err = run_cli(capsys, "plugins", "show", "mri")
    assert code == 2
    assert_one_line_error(
        err, "unknown plugin, modality, language, dataset format or label 'mri'", "covid19")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--plugin", "mri", "--lang", "zh"], ["unknown modality 'mri'", "installed: ct, cxr"]),
        (["--plugin", "ct", "--lang", "fr"], ["unknown language 'fr'", "en", "zh"]),
    ],
)
def test_run_with_unknown_names_exits_2_listing_installed(capsys, tmp_path, args, fragments):
    code, _, err = run_cli(capsys, "run", *args, str(tmp_path))
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_train_with_an_unknown_recipe_lists_the_shipped_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--recipe", "cov-ctr-alling", "--data", str(tmp_path),
                           "--out", str(tmp_path / "run"))
    assert code == 2
    assert_one_line_error(err, "unknown recipe 'cov-ctr-alling'", "cov-ctr-align")


def test_malformed_override_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--recipe", "x", "--data", str(tmp_path), "--out",
                           str(tmp_path), "--set", "lr")
    assert code == 2
    assert_one_line_error(err, "--set expects key=value, got 'lr'")


def test_click_usage_errors_are_one_line(capsys):
    code, _, err = run_cli(capsys, "run", "--lang", "en", "x.png")
    assert code == 2
    assert_one_line_error(err, "Missing option '--plugin'", "m3fm run --help")


def test_unexpected_errors_are_one_line_without_traceback(capsys, monkeypatch):
    import m3fm.cli

    def explode(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(m3fm.cli.plugins, "_plugin_rows", explode)
    code, _, err = run_cli(capsys, "plugins", "list")
    assert code == 1
    assert_one_line_error(err, "internal error: ZeroDivisionError: boom", "M3FM_DEBUG=1")


def test_preprocess_reports_each_input_and_keeps_going(capsys, tmp_path):
    from pydicom.data import get_testdata_file

    sample = get_testdata_file("CT_small.dcm")
    missing = tmp_path / "missing.dcm"
    code, out, _ = run_cli(capsys, "preprocess", "--plugin", "ct", "--json", sample, str(missing))
    first, second = (json.loads(line) for line in out.splitlines())
    assert code == 1
    assert first["input"] == sample and first["shape"] == [1, 224, 224]
    assert second == {"input": str(missing), "error": f"{missing}: no such file or folder"}


def test_preprocess_table_for_people(capsys):
    from pydicom.data import get_testdata_file

    sample = get_testdata_file("CT_small.dcm")
    code, out, _ = run_cli(capsys, "preprocess", "--plugin", "ct", sample)
    assert code == 0 and "[1, 224, 224]" in out


def test_data_summary_counts_records_and_lists_bad_rows(capsys, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        '{"language": "en", "report": "No effusion.", "modality": "cxr", "split": "val"}\n'
        '{"language": "en", "report": \n'
    )
    code, out, _ = run_cli(capsys, "data", "summary", str(tmp_path), "--json")
    summary = json.loads(out)
    assert code == 0
    assert summary["counts"] == [{"split": "val", "modality": "cxr", "language": "en",
                                  "records": 1, "with_image": 0, "labelled": 0}]
    [problem] = summary["problems"]
    assert problem["source"].endswith("manifest.jsonl:2")


def test_data_summary_of_an_unknown_folder_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "summary", str(tmp_path))
    assert code == 1
    assert_one_line_error(err, "cannot tell the data set format")


@pytest.mark.data
def test_data_summary_on_cov_ctr(capsys, data_root):
    code, out, _ = run_cli(capsys, "data", "summary", str(data_root / "cov-ctr"), "--json")
    counts = {(row["split"], row["language"]): row["records"] for row in json.loads(out)["counts"]}
    assert code == 0
    assert counts[("train", "en")] == counts[("train", "zh")] == 576


def test_recipes_lists_the_shipped_recipes(capsys):
    code, out, _ = run_cli(capsys, "recipes")
    assert code == 0 and "cov-ctr-align" in out and "multidomain-align" in out
