"""Stage 2 end to end through the CLI: train a tiny report model, run it, evaluate it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from generation_fixtures import tiny_generator_args, train_tiny_report_model
from PIL import Image
from safetensors.torch import load_file

import m3fm
from m3fm.generation.reporting import ReportModel
from m3fm.models.package import main as package_main

STEPS = 6



@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, run folder) of the zero-shot Chinese recipe, alignment trained first."""
    return train_tiny_report_model(tmp_path_factory.mktemp("generate"), steps=STEPS)


def test_training_writes_a_report_model_beside_its_alignment_model(trained):
    _, run = trained
    final = run / "final"
    assert (run / "align" / "final" / "model.safetensors").is_file()
    assert {"config.json", "model.safetensors", "memory_bank.safetensors", "align"} <= {
        p.name for p in final.iterdir()
    }
    metadata = json.loads((final / "metadata.json").read_text())
    assert metadata["task"]["examples"] == {"zh": 8}  # the 8 training reports, as text only
    assert metadata["task"]["image_examples"] == 0
    assert "ct/zh/CE-F1" in metadata["metrics"] and "ct/zh/BLEU-4" in metadata["metrics"]
    model = m3fm.load(final)
    assert isinstance(model, ReportModel) and model.report_languages == ("zh",)
    assert model.bank.embeddings["zh"].shape == model.bank.embeddings["ct/zh"].shape == (8, 16)


def test_supervised_setting_adds_image_pairs(trained, capsys, tmp_path):
    data, run = trained
    code, _, err = run_cli(
        capsys, "train", "--recipe", "cov-ctr-zh-fewshot", "--data", str(data), "--out",
        str(tmp_path / "fewshot"),
        *tiny_generator_args(f"align.checkpoint={run / 'align' / 'final'}",
                             "data.image_pairs=0.5", "train.max_steps=2"),
    )
    assert code == 0, err
    metadata = json.loads((tmp_path / "fewshot" / "final" / "metadata.json").read_text())
    assert metadata["task"]["image_examples"] == 4  # half of the 8 training images


def test_run_writes_reports_and_keeps_going_past_bad_inputs(trained, capsys, tmp_path):
    data, run = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "reports.jsonl"
    images = sorted((data / "images").glob("val-*.png"))
    code, stdout, err = run_cli(
        capsys, "run", "--plugin", "ct", "--lang", "zh", "--checkpoint", str(run / "final"),
        "--out", str(out), str(images[0]), str(broken), str(tmp_path / "missing.png"),
        str(images[1]),
    )
    assert code == 0
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # a failed input is written at once; the others in input order after their batch
    assert [Path(r["input"]).name for r in results] == [
        "broken.png", "missing.png", images[0].name, images[1].name]
    by_name = {Path(r["input"]).name: r for r in results}
    first = by_name[images[0].name]
    assert "report" in first and "report" in by_name[images[1].name]
    assert first["language"] == "zh" and " " not in first["report"]
    assert "broken.png" in by_name["broken.png"]["error"]
    assert "missing.png" in by_name["missing.png"]["error"]
    assert err.count("m3fm: error:") == 2 and "Traceback" not in err
    assert first["report"] in stdout


def test_run_fails_only_when_nothing_could_be_processed(trained, capsys, tmp_path):
    _, run = trained
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh", "--checkpoint",
                           str(run / "final"), str(tmp_path / "missing.png"))
    assert code == 1
    assert err.strip().splitlines()[-1] == "m3fm: error: no input could be processed (1 failed)"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--lang", "en"], 2, "no report generator for 'en'; it writes zh"),
        (["--lang", "xx"], 2, "unknown language 'xx'"),
        (["--plugin", "cxr"], 2, "no 'cxr' image tower; it has ct"),
    ],
)
def test_run_refuses_what_the_model_cannot_do(trained, capsys, tmp_path, args, code, message):
    data, run = trained
    image = next((data / "images").glob("val-*.png"))
    options = {"--plugin": "ct", "--lang": "zh"} | dict(zip(args[::2], args[1::2], strict=True))
    flat = [item for pair in options.items() for item in pair]
    status, _, err = run_cli(capsys, "run", *flat, "--checkpoint", str(run / "final"),
                             str(image))
    assert status == code
    assert message in err and len(err.strip().splitlines()) == 1


def test_run_refuses_an_alignment_checkpoint_and_an_incomplete_one(trained, capsys, tmp_path):
    data, run = trained
    image = str(next((data / "images").glob("val-*.png")))
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--checkpoint",
                           str(run / "align" / "final"), image)
    assert code == 2 and "not a report model" in err
    incomplete = tmp_path / "incomplete"
    shutil.copytree(run / "final", incomplete)
    (incomplete / "memory_bank.safetensors").unlink()
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh", "--checkpoint",
                           str(incomplete), image)
    assert code == 1 and "no memory_bank.safetensors" in err


def test_evaluate_report_scores_models_beside_baselines(trained, capsys, tmp_path):
    data, run = trained
    out, markdown, reports = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.jsonl"
    code, _stdout, err = run_cli(
        capsys, "evaluate", "--task", "report", "--checkpoint", str(run / "final"), "--data",
        str(data), "--split", "val", "--out", str(out), "--markdown", str(markdown),
        "--reports", str(reports), "--bridge", "noise",
    )
    assert code == 0, err
    rows = json.loads(out.read_text())
    assert [row["system"] for row in rows] == [
        "cov-ctr-zh-zeroshot", "most-frequent", "random-same-label", "nearest-report"]
    assert all(row["language"] == "zh" and row["n"] == 4 for row in rows)
    assert {"BLEU-4", "ROUGE-L", "CIDEr-D", "CE-F1", "CE-F1-positive"} <= set(rows[0])
    assert "| cov-ctr-zh-zeroshot |" in markdown.read_text()
    entries = [json.loads(line) for line in reports.read_text(encoding="utf-8").splitlines()]
    assert len(entries) == 4 and set(entries[0]["reports"]) == {row["system"] for row in rows}


def test_reports_are_scored_against_references_in_another_language(trained, capsys, tmp_path):
    """zh reports held to English references by their findings; the overlap scores come from
    the Chinese references, which every image also has."""
    data, run = trained
    out = {reference: tmp_path / f"{reference}.json" for reference in ("en", "zh")}
    for reference, path in out.items():
        code, _, err = run_cli(
            capsys, "evaluate", "--task", "report", "--checkpoint", str(run / "final"),
            "--data", str(data), "--lang", "zh", "--reference-lang", reference,
            "--no-baselines", "--out", str(path))
        assert code == 0, err
    across, same = (json.loads(out[reference].read_text())[0] for reference in ("en", "zh"))
    assert across["language"] == "zh" and across["reference_language"] == "en"
    assert same["reference_language"] == "zh" and across["n"] == same["n"] == 4
    assert 0 <= across["CE-F1"] <= 1 and across["BLEU-4"] == same["BLEU-4"]


def test_reference_lang_needs_a_report_language(trained, capsys):
    data, run = trained
    code, _, err = run_cli(capsys, "evaluate", "--task", "report", "--checkpoint",
                           str(run / "final"), "--data", str(data), "--reference-lang", "en")
    assert code == 2 and "--reference-lang goes with --task report and a --lang" in err


def test_the_same_pixels_give_the_same_report(trained, tmp_path):
    """Decoding is deterministic and depends on the pixels only, not on the file."""
    data, run = trained
    model = m3fm.load(run / "final")
    image = next((data / "images").glob("val-*.png"))
    copy = tmp_path / "copy.png"
    Image.open(image).save(copy)
    first, second = model.generate([image, copy], modality="ct", lang="zh")
    assert first == second


def test_packaged_model_is_half_size_loads_and_has_a_model_card(trained, capsys, tmp_path):
    data, run = trained
    results = tmp_path / "val.json"
    code, _, err = run_cli(capsys, "evaluate", "--task", "report", "--checkpoint",
                           str(run / "final"), "--data", str(data), "--out", str(results))
    assert code == 0, err
    diagnosis = tmp_path / "val-diagnosis.json"  # as `m3fm evaluate --task diagnosis --out`
    diagnosis.write_text(json.dumps({"few_shot": [], "rows": [
        {"modality": "ct", "label": "covid19", "split": "val", "method": "zero-shot image",
         "language": "zh", "n": 4, "positives": 2, "auc": 0.55},
        {"modality": "ct", "label": "covid19", "split": "val", "method": "chance",
         "language": "-", "n": 4, "positives": 2, "auc": 0.5}]}))
    target = tmp_path / "bundled"
    with pytest.raises(SystemExit) as exit_info:
        package_main([str(run / "final"), str(target), "--results", str(results),
                      "--diagnosis", str(diagnosis)])
    assert exit_info.value.code == 0
    original, packed = (load_file(str(d / "model.safetensors")) for d in (run / "final", target))
    assert all(packed[k].dtype == torch.float16 and packed[k].shape == original[k].shape
               for k in original if original[k].is_floating_point())
    for name in ("model.safetensors", "align/model.safetensors"):
        assert (target / name).stat().st_size < 0.6 * (run / "final" / name).stat().st_size
    card = (target / "README.md").read_text(encoding="utf-8")
    assert "cov-ctr-zh-zeroshot" in card and "| nearest-report" in card and "CC BY" in card
    # the tiny model's own settings are stated as overrides of the shipped recipe
    command = card.split("**Produced by:** `", 1)[1].split("`", 1)[0]
    assert command.startswith("m3fm train --recipe cov-ctr-zh-zeroshot --set align.recipe=")
    assert "--set model.hidden_size=32" in command and "--set train.max_steps=" in command
    assert "align.checkpoint" not in command
    assert "- **Out-of-distribution flag:** `align/ood.safetensors`" in card
    assert "holds\n  8 zh (ct/zh 8) training-report embeddings" in card
    assert " distinct " in card and "- ct (zh): covid19" in card  # AUC 0.55 < 0.6
    assert json.loads((target / "validation.json").read_text())["rows"][0]["auc"] == 0.55
    image = next((data / "images").glob("val-*.png"))
    code, out, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh", "--no-report",
                             "--checkpoint", str(target), str(image))
    assert code == 0 and "covid19: 0." in out and "(unvalidated)" in out, err
    code, out, _ = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh", "--no-report",
                           "--json", "--checkpoint", str(run / "final"), str(image))
    assert "unvalidated" not in json.loads(out)  # a model without figures claims nothing
    before = m3fm.load(run / "final").embed_images([image], modality="ct")
    after = m3fm.load(target).embed_images([image], modality="ct")
    assert torch.allclose(before, after, atol=1e-2)


def test_without_a_bundled_model_run_asks_for_a_checkpoint(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("m3fm.models.MODELS_DIR", tmp_path)
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", str(tmp_path / "x.png"))
    assert code == 1 and "no bundled m3fm-small model" in err and "--checkpoint" in err


def test_a_card_names_the_shipped_recipe_when_the_model_has_its_settings():
    from m3fm.models.package import _recipe_as_shipped
    from m3fm.recipes import load_recipe

    shipped = load_recipe("m3fm-small").model_dump(mode="json")
    earlier = shipped | {"version": shipped["version"] - 1}  # trained with overrides, adopted
    assert _recipe_as_shipped(earlier) == (shipped["version"], [])
    other = earlier | {"model": shipped["model"] | {"decoder_layers": 7},
                       "decode": shipped["decode"] | {"bridge": "memory"}}
    assert _recipe_as_shipped(other) == (shipped["version"] - 1, [
        "--set model.decoder_layers=7", "--set decode.bridge=memory"])
    assert _recipe_as_shipped(other | {"name": "a-plugins-own-recipe"}) == (
        shipped["version"] - 1, [])
