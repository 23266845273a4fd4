"""Diagnosis: prompts, zero-shot scores, probes, the evaluation and `m3fm run` with labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from generation_fixtures import train_tiny_report_model
from pydantic import ValidationError

import m3fm
from m3fm.diagnosis.evaluation import evaluate_diagnosis, labelled_images
from m3fm.diagnosis.probe import check_shots, fit_probe, probe_draws, sample_shots
from m3fm.diagnosis.zeroshot import PromptClassifier, resolve_labels
from m3fm.registry import LabelPrompts, Record, UnknownNameError, UsageError, get_registry


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, run folder): a tiny zh report model on synthetic COV-CTR data."""
    return train_tiny_report_model(tmp_path_factory.mktemp("diagnosis"))


def records_of(data: Path) -> list[Record]:
    from m3fm.data import read_records

    return read_records(data)


# Prompts and labels ------------------------------------------------------------------------


def test_described_labels_replace_the_templates_and_others_fill_them():
    registry = get_registry()
    english = registry.language("en")
    positive, negative, used = registry.label_prompts("covid19", "en")
    assert used == "en"
    assert positive == list(registry.label("covid19").prompts["en"].positive)
    assert negative == list(registry.label("covid19").prompts["en"].negative)
    assert "COVID-19" not in positive[0]  # described by its signs, as the reports do
    positive, _, _ = registry.label_prompts("effusion", "en")
    assert positive[0] == "Findings consistent with pleural effusion."
    assert len(positive) == len(english.positive_templates)
    # The modality's English prompts are the language's templates filled with its names.
    assert registry.label_prompts("effusion", "en")[:2] == english.prompts("effusion")


def test_label_prompts_need_sentences_on_both_sides():
    with pytest.raises(ValidationError, match="negative"):
        LabelPrompts(positive=("Ground glass.",), negative=())


def test_labels_are_checked_against_the_modality():
    assert resolve_labels("ct", None) == ("covid19",)
    with pytest.raises(UnknownNameError, match="it declares: covid19"):
        resolve_labels("ct", ["effusion"])


# Zero-shot scores --------------------------------------------------------------------------


def test_probabilities_are_the_softmax_over_present_and_absent_prompts(trained):
    _, run = trained
    model = m3fm.load(run / "final")
    classifier = PromptClassifier(model, ["covid19"], "zh")
    images = torch.nn.functional.normalize(torch.randn(3, classifier.prompts.shape[-1]), dim=1)
    probabilities = classifier.probabilities(images)
    assert probabilities.shape == (3, 1)
    positive, negative = get_registry().language("zh").prompts("covid19")
    present = torch.nn.functional.normalize(model.embed_texts(positive, "zh").mean(0), dim=0)
    absent = torch.nn.functional.normalize(model.embed_texts(negative, "zh").mean(0), dim=0)
    logits = model.logit_scale * torch.stack([images @ present, images @ absent], dim=1)
    torch.testing.assert_close(probabilities[:, 0], logits.softmax(dim=1)[:, 0])


# Probes ------------------------------------------------------------------------------------


def test_shots_are_drawn_per_class_and_seeded():
    labels = np.array([0] * 20 + [1] * 10)
    chosen = sample_shots(labels, "5", seed=0)
    assert sorted(np.bincount(labels[chosen])) == [5, 5]
    assert np.array_equal(chosen, sample_shots(labels, "5", seed=0))
    assert not np.array_equal(chosen, sample_shots(labels, "5", seed=1))
    assert list(np.bincount(labels[sample_shots(labels, "10%", seed=0)])) == [2, 1]
    assert len(sample_shots(labels, "100%", seed=3)) == 30


@pytest.mark.parametrize("shots", ["0", "-1", "five", "150%", "0%"])
def test_bad_shot_settings_are_refused(shots):
    with pytest.raises(UsageError, match="shots must be"):
        check_shots(shots)


def test_a_probe_needs_both_classes_and_learns_a_separable_problem():
    with pytest.raises(UsageError, match="both classes"):
        fit_probe(np.zeros((4, 2)), np.array([1, 1, 1, 1]))
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    features = rng.normal(size=(40, 3)) + labels[:, None] * 3
    probes = probe_draws(features, labels, "5", seeds=[0, 1, 2])
    assert len(probes) == 3 and len(probe_draws(features, labels, "100%", [0, 1])) == 1
    assert (probes[0].predict(features) == labels).mean() > 0.9


# The evaluation ----------------------------------------------------------------------------


def test_evaluation_scores_every_method_on_the_split(trained):
    data, run = trained
    model = m3fm.load(run / "final")
    result = evaluate_diagnosis(model, records_of(data), modality="ct", label="covid19",
                                split="val", shots=("1", "100%"), seeds=(0, 1), cnn_epochs=1)
    methods = {(row["method"], row["language"]) for row in result.rows}
    assert methods == {
        ("zero-shot image", "en"), ("zero-shot image", "zh"), ("zero-shot report", "zh"),
        ("zero-shot combined", "zh"), ("supervised probe", "-"), ("chance", "-"),
        ("small CNN", "-"),
    }
    for row in result.rows:
        assert row["n"] == 4 and row["positives"] == 2  # the 4 val images, 2 with COVID-19
        assert 0 <= row["auc"] <= 1 and 0 <= row["accuracy"] <= 1
    chance = next(row for row in result.rows if row["method"] == "chance")
    assert chance["auc"] == 0.5
    assert [row["shots"] for row in result.few_shot] == ["1", "100%"]
    assert [row["draws"] for row in result.few_shot] == [2, 1]
    json.dumps(result.rows)
    assert set(result.curves) >= {"zero-shot image (zh)", "chance", "small CNN"}


def test_a_single_class_split_reports_accuracy_and_says_auc_is_undefined(trained):
    data, run = trained
    model = m3fm.load(run / "final")
    records = [r for r in records_of(data) if r.split == "train" or r.labels["covid19"] == 1]
    result = evaluate_diagnosis(model, records, modality="ct", label="covid19", split="val",
                                languages=["en"], shots=("1",), seeds=(0,))
    row = result.rows[0]
    assert row["auc"] is None and row["note"].startswith("AUC undefined")
    assert row["accuracy"] is not None and result.few_shot[0]["auc_mean"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "train"}, "probes learn from the train split"),
        ({"modality": "cxr"}, "no 'cxr' image tower"),
        ({"languages": ["fr"]}, "not trained on 'fr'"),
    ],
)
def test_evaluation_refuses_what_it_cannot_measure(trained, kwargs, message):
    data, run = trained
    options = {"modality": "ct", "label": "covid19", "split": "val"} | kwargs
    with pytest.raises(UsageError, match=message):
        evaluate_diagnosis(m3fm.load(run / "final"), records_of(data), **options)


def test_rows_name_the_prompt_language_when_a_label_falls_back_on_english(trained):
    """A label a plugin declares for ct with English prompts only, diagnosed in zh: the
    zero-shot rows say the prompts were English."""
    import types

    from m3fm.registry import LabelSpec, hookimpl

    plugin = types.ModuleType("marker_labels")
    plugin.m3fm_labels = hookimpl(lambda: [LabelSpec(
        id="ct_marker", modalities=("ct",), description="a test label",
        prompts={"en": LabelPrompts(positive=("Ground glass opacity.",),
                                    negative=("The lungs are clear.",))})])
    get_registry().add_plugin(plugin, "marker_labels", package="pkg-marker", version="1.0")
    data, run = trained
    records = [record.model_copy(update={"labels": {"ct_marker": record.labels["covid19"]}})
               for record in records_of(data) if "covid19" in record.labels]
    result = evaluate_diagnosis(m3fm.load(run / "final"), records, modality="ct",
                                label="ct_marker", split="val", languages=["zh"],
                                shots=("1",), seeds=(0,), cnn_epochs=1)
    zero_shot = {row["language"] for row in result.rows if row["method"].startswith("zero")}
    assert zero_shot == {"zh (en prompts)"}


def test_a_split_without_images_of_the_modality_is_named(trained):
    data, _ = trained
    with pytest.raises(UsageError, match="split 'test' has no ct images labelled 'covid19'"):
        labelled_images(records_of(data), split="test", modality="ct", label="covid19")


# The command line --------------------------------------------------------------------------


def test_run_prints_label_probabilities_beside_each_report(trained, capsys):
    data, run = trained
    images = sorted(str(p) for p in (data / "images").glob("val-*.png"))[:2]
    code, stdout, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh", "--json",
                                "--checkpoint", str(run / "final"), *images)
    assert code == 0, err
    results = [json.loads(line) for line in stdout.splitlines()]
    assert all("report" in r and 0 < r["diagnosis"]["covid19"] < 1 for r in results)
    code, stdout, _ = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh",
                              "--diagnosis-from", "combined", "--checkpoint",
                              str(run / "final"), images[0])
    assert code == 0 and "  covid19: 0." in stdout


def test_run_diagnoses_without_reports_from_an_alignment_model(trained, capsys):
    data, run = trained
    image = str(next((data / "images").glob("val-*.png")))
    code, stdout, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "en", "--no-report",
                                "--json", "--checkpoint", str(run / "align" / "final"), image)
    assert code == 0, err
    result = json.loads(stdout)
    assert "report" not in result and set(result["diagnosis"]) == {"covid19"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "effusion"], "unknown label for modality 'ct': 'effusion'"),
        (["--no-report", "--no-diagnosis"], "leaves nothing to do"),
        (["--no-report", "--diagnosis-from", "report", "--checkpoint", "ALIGN"],
         "not a report model"),
    ],
)
def test_run_refuses_diagnosis_it_cannot_do(trained, capsys, args, message):
    data, run = trained
    image = str(next((data / "images").glob("val-*.png")))
    args = [str(run / "align" / "final") if a == "ALIGN" else a for a in args]
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "en", *args, image)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_diagnosis_writes_json_and_plots(trained, capsys, tmp_path):
    data, run = trained
    out = tmp_path / "diagnosis.json"
    code, stdout, err = run_cli(capsys, "evaluate", "--task", "diagnosis", "--checkpoint",
                                str(run / "final"), "--data", str(data), "--out", str(out),
                                "--plots", str(tmp_path / "plots"))
    assert code == 0, err
    written = json.loads(out.read_text())
    assert {row["method"] for row in written["rows"]} >= {"zero-shot image", "chance"}
    assert [row["shots"] for row in written["few_shot"]] == ["1", "5", "10", "10%", "100%"]
    for name in ("roc.png", "few-shot.png"):
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")
    assert "zero-shot image" in stdout
