"""`m3fm benchmark`: its refusals, its results folder, and (slow) the quick run on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from m3fm.benchmarks.results import render_markdown, write_results
from m3fm.benchmarks.suite import Benchmark, BenchmarkError, Stage, extra_stages
from m3fm.registry import UsageError


def data_folder(root: Path) -> Path:
    for name in ("cov-ctr", "covid-cxr", "iu-xray-reports"):
        (root / name).mkdir(parents=True)
    return root


def synthetic_results() -> dict:
    """A results dict of the shape `Benchmark.measure` returns, with one undefined AUC."""
    rows = [
        {"modality": "ct", "label": "covid19", "split": "val", "method": "zero-shot image",
         "language": "zh", "n": 4, "positives": 2, "auc": 0.75, "f1": 0.8, "accuracy": 0.75,
         "threshold": 0.4},
        {"modality": "ct", "label": "covid19", "split": "val", "method": "chance",
         "language": "-", "n": 4, "positives": 4, "auc": None, "f1": 1.0, "accuracy": 1.0,
         "threshold": 0.5, "note": "AUC undefined: the split has only one class"},
    ]
    few_shot = [{"shots": "1", "draws": 2, "auc_mean": 0.6, "auc_std": 0.1, "f1_mean": 0.5,
                 "f1_std": 0.0, "accuracy_mean": 0.5, "accuracy_std": 0.0}]
    return {
        "meta": {"command": "m3fm benchmark --data DATA --split val", "split": "val",
                 "quick": False, "m3fm_version": "0", "git_commit": None, "hardware": "2 CPU",
                 "date": "2026-01-01", "timings_s": {"retrieval": 65.0}},
        "report": [{"language": "zh", "system": "s", "n": 4, "BLEU-1": 1.0, "BLEU-2": 1.0,
                    "BLEU-3": 1.0, "BLEU-4": 1.0, "ROUGE-L": 1.0, "CIDEr-D": 1.0, "CE-P": 1.0,
                    "CE-R": 1.0, "CE-F1": 1.0, "CE-F1-positive": 1.0}],
        "retrieval": [],
        "diagnosis": [{"data": "cov-ctr", "modality": "ct", "label": "covid19",
                       "model": "cov-ctr-align", "rows": rows, "few_shot": few_shot,
                       "curves": {"zero-shot image (zh)": ([0, 1, 0, 1], [.1, .9, .2, .3])}}],
    }


def test_results_folder_has_json_markdown_and_plots(tmp_path):
    results = synthetic_results()
    paths = write_results(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["split"] == "val"
    for name in ("roc-cov-ctr-cov-ctr-align.png", "few-shot-cov-ctr-cov-ctr-align.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
        assert tmp_path / name in paths
    markdown = (tmp_path / "results.md").read_text()
    assert markdown == render_markdown(results)
    assert "| retrieval | 1 min 05 s |" in markdown
    assert "Best zero-shot: **zero-shot image (zh)**, AUC 0.750." in markdown
    assert "AUC undefined: the split has only one class." in markdown
    assert "| n/a" in markdown and "0.600 ± 0.100" in markdown


def test_benchmark_needs_the_three_data_sets(capsys, tmp_path):
    code, _, err = run_cli(capsys, "benchmark", "--data", str(tmp_path), "--quick")
    assert code == 2
    assert "no cov-ctr/ folder" in err and len(err.strip().splitlines()) == 1


def test_a_finished_model_is_reused_and_a_foreign_one_refused(tmp_path):
    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs")
    final = suite.model_dir("cov-ctr-align")
    final.mkdir(parents=True)
    (final / "metadata.json").write_text(json.dumps({"task": {"recipe": {"name": "x"}}}))
    with pytest.raises(UsageError, match="holds x, not cov-ctr-align"):
        suite.train()
    (final / "metadata.json").write_text(
        json.dumps({"task": {"recipe": {"name": "cov-ctr-align"}}}))
    assert suite._reusable(Stage("cov-ctr-align", "cov-ctr"))
    assert not suite._reusable(Stage("cov-ctr-zh-zeroshot", "cov-ctr", align="cov-ctr-align"))


def test_an_unmeasured_alignment_model_is_trained_only_for_a_generator_to_train(tmp_path):
    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs")
    align, generator = (Stage("m3fm-small-align", "."),
                        Stage("m3fm-small", ".", align="m3fm-small-align"))
    assert not suite._feeds_only_trained_models(align)
    final = suite.model_dir("m3fm-small")
    final.mkdir(parents=True)
    (final / "metadata.json").write_text(json.dumps({"task": {"recipe": {"name": "m3fm-small"}}}))
    assert suite._reusable(generator) and suite._feeds_only_trained_models(align)
    # a measured alignment model is trained even when its generators are all there
    assert not suite._feeds_only_trained_models(Stage("cov-ctr-align", "cov-ctr"))


def test_quick_runs_keep_their_tiny_models_apart(tmp_path):
    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs", quick=True)
    assert suite.model_dir("m3fm-small") == tmp_path / "runs" / "quick" / "m3fm-small" / "final"
    generator = suite._overrides(Stage("m3fm-small", ".", align="m3fm-small-align"))
    assert generator["align.checkpoint"] == str(suite.model_dir("m3fm-small-align"))
    assert generator["train.max_steps"] == "3"


@pytest.mark.slow
@pytest.mark.data
def test_quick_benchmark_runs_end_to_end_on_the_real_data(data_root, capsys, tmp_path):
    args = ["benchmark", "--data", str(data_root), "--quick", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "results")]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert {row["system"] for row in results["report"]} >= {
        "cov-ctr-zh-zeroshot", "cov-ctr-en-zeroshot", "m3fm-small", "most-frequent",
        "nearest-report"}
    assert {(row["system"], row["language"]) for row in results["report"]} >= {
        ("m3fm-small", "en"), ("m3fm-small", "zh")}  # the bundled model writes both on CT
    assert {(b["data"], b["model"]) for b in results["diagnosis"]} == {
        ("cov-ctr", "cov-ctr-align"), ("cov-ctr", "m3fm-small"), ("covid-cxr", "m3fm-small")}
    for block in results["diagnosis"]:
        assert {(r["method"], r["language"]) for r in block["rows"]} >= {
            ("zero-shot image", "en"), ("zero-shot image", "zh"), ("zero-shot report", "zh"),
            ("supervised probe", "-"), ("chance", "-"), ("small CNN", "-")}
    assert {row["data"] for row in results["retrieval"]} == {"cov-ctr", "covid-cxr"}
    assert "results.md" in stdout and "training cov-ctr-align" in err
    code, _, err = run_cli(capsys, *args)  # a second call reuses every model
    assert code == 0 and "training" not in err


def test_the_results_page_is_the_benchmark_output_as_written():
    results = REPO / "docs" / "results"
    rendered = render_markdown(json.loads((results / "results.json").read_text()))
    assert (results / "results.md").read_text() == rendered
    assert '--8<-- "docs/results/results.md"' in (results / "index.md").read_text()
    for block in json.loads((results / "results.json").read_text())["diagnosis"]:
        assert (results / f"roc-{block['data']}-{block['model']}.png").is_file()


def test_a_plugin_recipe_brings_its_alignment_recipe_named_beside_it(tmp_path):
    recipes = REPO / "docs" / "examples" / "m3fm-es" / "recipes"
    align, generator = extra_stages(recipes / "es-zeroshot.toml")
    assert (align.recipe, align.align, Path(align.source)) == (
        "cov-ctr-es-align", None, recipes / "es-align.toml")
    assert (generator.recipe, generator.align) == ("cov-ctr-es-zeroshot", "cov-ctr-es-align")
    fixed = tmp_path / "fixed.toml"
    fixed.write_text((recipes / "es-zeroshot.toml").read_text().replace(
        'recipe = "es-align.toml"', 'checkpoint = "runs/align/final"'))
    with pytest.raises(UsageError, match=r"name the alignment model by align\.recipe"):
        extra_stages(fixed)


def test_a_text_only_language_is_scored_against_the_anchor_references(tmp_path, monkeypatch):
    """A generator writing en and zh, on data with English reports only: en is held to its
    own references, zh (no image reported in it) to the English ones, by its findings; with
    Chinese references too, zh is scored against both."""
    from types import SimpleNamespace

    from m3fm.registry import Record

    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs")
    model = SimpleNamespace(modalities=("ct",), languages=("en", "zh"),
                            report_languages=("en", "zh"))
    monkeypatch.setattr("m3fm.generation.reporting.ReportModel.from_pretrained",
                        lambda path: model)
    records = [Record(id=f"{split}{i}", dataset="t", split=split, modality="ct",
                      image=f"/{split}{i}.png", language="en", report="Ground glass opacity.",
                      labels={"covid19": i % 2}, source="t")
               for split in ("train", "val") for i in range(2)]
    monkeypatch.setattr(suite, "_recipe_records", lambda stage, modality: (records, "covid19"))
    calls = []

    def evaluate(models, given, **options):
        calls.append((options["languages"], options["reference_language"]))
        return SimpleNamespace(rows=[{"language": options["languages"][0],
                                      "reference_language": options["reference_language"]}])

    monkeypatch.setattr("m3fm.generation.evaluation.evaluate_report_models", evaluate)
    rows = suite._extra_reports(Stage("cov-ctr-zh-text", "cov-ctr", align="x"))
    assert calls == [(["en"], "en"), (["zh"], "en")]
    assert [row["reference_language"] for row in rows] == ["en", "en"]
    records += [record.model_copy(update={"language": "zh", "id": record.id + "zh"})
                for record in records]
    calls.clear()
    suite._extra_reports(Stage("cov-ctr-zh-text", "cov-ctr", align="x"))
    assert calls == [(["en"], "en"), (["zh"], "zh"), (["zh"], "en")]


def test_steps_the_data_cannot_serve_are_skipped_and_named(tmp_path, monkeypatch):
    """A missing label or language skips its step with the reason; the others are measured
    and results.md says what was not (issue 15, part 3).  A real fault still stops."""
    from m3fm.registry import MissingDataError, NotAvailableError

    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs", quick=True)
    measured = [{"language": "zh", "system": "measured"}]
    monkeypatch.setattr(suite, "_report_generation", lambda: measured)

    def no_labels():
        raise MissingDataError("split 'val' has no ct images labelled 'nodule'")

    def no_extractor(*args):
        raise NotAvailableError("language 'es' has no finding extractor")

    monkeypatch.setattr(suite, "_retrieval", no_labels)
    monkeypatch.setattr(suite, "_diagnosis", no_extractor)
    published = []
    results = suite.measure(lambda results: published.append(json.loads(json.dumps(results))))
    assert results["report"] == measured and results["diagnosis"] == []
    skipped = results["meta"]["skipped"]
    assert skipped[0] == {"step": skipped[0]["step"],
                          "reason": "split 'val' has no ct images labelled 'nodule'"}
    assert skipped[0]["step"].startswith("retrieval on cov-ctr")
    assert all("no finding extractor" in entry["reason"] for entry in skipped[1:])
    # retrieval, and diagnosis with cov-ctr-align and with m3fm-small on cov-ctr and covid-cxr
    assert len(skipped) == 4
    assert published[-1]["meta"]["skipped"] == skipped
    markdown = render_markdown(results | {"meta": results["meta"] | {"timings_s": {}}})
    assert "**Not measured**" in markdown
    assert "- retrieval on cov-ctr" in markdown and "labelled 'nodule'" in markdown

    monkeypatch.setattr(suite, "_retrieval", lambda: 1 / 0)
    with pytest.raises(BenchmarkError, match=r"division by zero"):
        suite.measure()


def test_one_language_without_an_extractor_leaves_the_others_rows(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from m3fm.registry import NotAvailableError, Record

    suite = Benchmark(data_folder(tmp_path / "data"), tmp_path / "runs")
    model = SimpleNamespace(modalities=("ct",), languages=("en", "zh"),
                            report_languages=("en", "zh"))
    monkeypatch.setattr("m3fm.generation.reporting.ReportModel.from_pretrained",
                        lambda path: model)
    records = [Record(id="v", dataset="t", split="val", modality="ct", image="/v.png",
                      language="en", report="Normal.", labels={}, source="t")]
    monkeypatch.setattr(suite, "_recipe_records", lambda stage, modality: (records, "covid19"))

    def evaluate(models, given, **options):
        if options["languages"] == ["zh"]:
            raise NotAvailableError("no finding extractor for 'zh'")
        return SimpleNamespace(rows=[{"language": "en"}])

    monkeypatch.setattr("m3fm.generation.evaluation.evaluate_report_models", evaluate)
    assert suite._extra_reports(Stage("g", ".", align="a")) == [{"language": "en"}]
    assert suite.skipped == [{"step": "report generation with g in zh against en references",
                              "reason": "no finding extractor for 'zh'"}]
