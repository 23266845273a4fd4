"""Loading a checkpoint never runs code from it, never reads outside it, and a damaged one is
refused with one line that names the file (see docs/security.md)."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from alignment_fixtures import TINY_MODEL
from conftest import run_cli
from generation_fixtures import TINY_GENERATOR
from PIL import Image

import m3fm
from m3fm.alignment.model import MultiMedCLIP
from m3fm.checkpoint import read_metadata, save_model_files, write_directory_atomically
from m3fm.generation.bridge import MemoryBank
from m3fm.generation.model import MultiMedLM
from m3fm.generation.reporting import ReportModel, ReportModelConfig, save_report_artifacts
from m3fm.imaging import timm_encoder
from m3fm.recipes import load_recipe
from m3fm.registry import ConfigError, EncoderOptions, M3fmError
from m3fm.tokenizer import load_tokenizer, train_tokenizer
from m3fm.training.state import TrainingState

NEVER_RUNS = "m3fm never runs code from a checkpoint"


def _overrides(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A tiny alignment checkpoint and a tiny report model, saved once; tests copy them."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["Ground glass opacity.", "双肺未见异常。"] * 3, vocab_size=150)
    align = MultiMedCLIP(load_recipe("cov-ctr-align", _overrides(TINY_MODEL)).model, tokenizer)
    align.save_pretrained(root / "align")
    recipe = load_recipe("cov-ctr-zh-zeroshot", _overrides(TINY_GENERATOR))
    generator = MultiMedLM(recipe.model, align.config.embed_dim, tokenizer)
    bank = MemoryBank({lang: torch.randn(3, align.config.embed_dim)
                       for lang in recipe.model.languages})
    config = ReportModelConfig(generator=recipe.model, decode=recipe.decode)

    def fill(directory: Path) -> None:
        save_model_files(directory, generator, metadata={"task": "test"},
                         artifacts=lambda d: save_report_artifacts(d, align, config, bank))

    write_directory_atomically(root / "report", fill)
    return {"align": root / "align", "report": root / "report"}


@pytest.fixture
def align_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved["align"], tmp_path / "align-checkpoint"))


@pytest.fixture
def report_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved["report"], tmp_path / "report-checkpoint"))


@pytest.fixture
def answers_yes(monkeypatch):
    """Stdin that would accept transformers' "run the custom code? [y/N]" prompt."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))


def _plant_custom_code(checkpoint: Path, config_file: str, marker: Path) -> Path:
    """Point `config_file` of `checkpoint` at a module beside it that writes `marker` when
    imported, as a hostile checkpoint would; returns the config file."""
    config = checkpoint / config_file
    module = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    module += "from transformers import BertConfig, BertModel, PreTrainedTokenizerFast\n"
    module += "class Config(BertConfig):\n    pass\nclass Model(BertModel):\n    pass\n"
    module += "class Tokenizer(PreTrainedTokenizerFast):\n    pass\n"
    (config.parent / "planted.py").write_text(module)
    data = json.loads(config.read_text(encoding="utf-8"))
    if config.name == "tokenizer_config.json":
        data |= {"tokenizer_class": "Tokenizer",
                 "auto_map": {"AutoTokenizer": [None, "planted.Tokenizer"]}}
    else:
        data.pop("model_type", None)  # else transformers would quietly prefer its own class
        data["auto_map"] = {"AutoConfig": "planted.Config", "AutoModel": "planted.Model"}
    config.write_text(json.dumps(data), encoding="utf-8")
    return config


def _refusal(config: Path) -> str:
    return f"{config}: refers to custom code (auto_map); {NEVER_RUNS}"


CONFIG_FILES = ["text_encoder/config.json", "tokenizer_config.json", "config.json"]


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_custom_code_in_an_alignment_checkpoint_is_refused_without_a_prompt(
    align_dir, config_file, tmp_path, capsys, answers_yes
):
    marker = tmp_path / "code-ran"
    config = _plant_custom_code(align_dir, config_file, marker)
    with pytest.raises(M3fmError) as refused:
        MultiMedCLIP.from_pretrained(align_dir)
    assert str(refused.value) == _refusal(config)
    assert not marker.exists()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("config_file", [f"align/{name}" for name in CONFIG_FILES])
def test_custom_code_in_a_report_model_is_refused_without_a_prompt(
    report_dir, config_file, tmp_path, capsys, answers_yes
):
    marker = tmp_path / "code-ran"
    config = _plant_custom_code(report_dir, config_file, marker)
    for load in (ReportModel.from_pretrained, m3fm.load):
        with pytest.raises(M3fmError) as refused:
            load(report_dir)
        assert str(refused.value) == _refusal(config)
    assert not marker.exists()
    assert capsys.readouterr().out == ""


def test_the_cli_refuses_a_report_model_with_custom_code(report_dir, tmp_path, capsys,
                                                         answers_yes):
    marker = tmp_path / "code-ran"
    config = _plant_custom_code(report_dir, "align/text_encoder/config.json", marker)
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(image)
    code, out, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh",
                             "--checkpoint", str(report_dir), str(image))
    assert (code, out, err) == (1, "", f"m3fm: error: {_refusal(config)}\n")
    assert not marker.exists()


def test_the_cli_refuses_an_alignment_checkpoint_with_custom_code(align_dir, tmp_path, capsys,
                                                                  answers_yes):
    marker = tmp_path / "code-ran"
    config = _plant_custom_code(align_dir, "tokenizer_config.json", marker)
    texts = tmp_path / "texts.txt"
    texts.write_text("Ground glass opacity.\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "embed", "--checkpoint", str(align_dir),
                             "--texts", str(texts), "--lang", "en")
    assert (code, out, err) == (1, "", f"m3fm: error: {_refusal(config)}\n")
    assert not marker.exists()


def test_a_hub_kernel_named_by_the_text_encoder_config_is_refused(align_dir):
    config = align_dir / "text_encoder" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps(data | {"attn_implementation": "kernels-community/x"}))
    with pytest.raises(M3fmError) as refused:
        MultiMedCLIP.from_pretrained(align_dir)
    assert str(refused.value) == f"{config}: refers to custom code (attn_implementation); " \
        f"{NEVER_RUNS}"


@pytest.mark.parametrize("model_type", ["not-a-model", None])
def test_a_text_encoder_of_unknown_type_is_named(align_dir, model_type):
    config = align_dir / "text_encoder" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps(data | {"model_type": model_type}), encoding="utf-8")
    with pytest.raises(M3fmError) as refused:
        MultiMedCLIP.from_pretrained(align_dir)
    assert str(refused.value).startswith(f"{config}: model_type {model_type!r} is not ")


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors", "text_encoder"])
def test_a_link_that_leaves_the_checkpoint_is_refused(align_dir, tmp_path, name):
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    shutil.move(align_dir / name, outside)
    (align_dir / name).symlink_to(outside)
    with pytest.raises(M3fmError) as refused:
        MultiMedCLIP.from_pretrained(align_dir)
    assert str(refused.value).startswith(
        f"{align_dir / name}: a link to {outside.resolve()}, outside "
    )


def test_a_link_inside_the_checkpoint_is_followed(align_dir):
    (align_dir / "model.safetensors").rename(align_dir / "weights.safetensors")
    (align_dir / "model.safetensors").symlink_to("weights.safetensors")
    assert MultiMedCLIP.from_pretrained(align_dir).config.embed_dim == 16


@pytest.mark.parametrize("reference", ["absolute", "../elsewhere/tokenizer.json"])
def test_a_tokenizer_setting_that_names_a_file_elsewhere_is_refused(align_dir, tmp_path,
                                                                    reference):
    outside = tmp_path / "elsewhere" / "tokenizer.json"
    outside.parent.mkdir()
    shutil.copy(align_dir / "tokenizer.json", outside)
    value = str(outside) if reference == "absolute" else reference
    config = align_dir / "tokenizer_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps(data | {"tokenizer_file": value}), encoding="utf-8")
    for load in (MultiMedCLIP.from_pretrained, load_tokenizer):
        with pytest.raises(M3fmError) as refused:
            load(align_dir)
        assert str(refused.value).startswith(
            f"{config}: tokenizer_file names {value!r}, outside the checkpoint; "
        )


class _WritesMarker:
    """Unpickling it would call Path.write_text: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "ran")


def test_a_timm_weights_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    weights = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": _WritesMarker(marker)}, weights)
    options = EncoderOptions(backbone="resnet18", pretrained=True, weights=weights)
    with pytest.raises(M3fmError) as refused:
        timm_encoder(options, default_backbone="resnet18")
    assert str(refused.value).startswith(f"{weights}: cannot load it as resnet18 weights: ")
    assert not marker.exists()


def test_timm_weights_saved_by_torch_still_load_and_are_adapted_to_grey(tmp_path):
    source = timm.create_model("resnet18")
    weights = tmp_path / "imagenet.pth"
    torch.save({"state_dict": source.state_dict()}, weights)
    options = EncoderOptions(pretrained=True, weights=weights)
    loaded = timm_encoder(options, default_backbone="resnet18")
    assert torch.allclose(loaded.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert "state_dict" not in loaded.pretrained_cfg  # the loaded tensors are not kept twice


def test_a_training_state_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    state = tmp_path / "training_state.pt"
    torch.save({"format": 1, "step": _WritesMarker(marker)}, state)
    with pytest.raises(M3fmError, match=r"^refusing to load "):
        TrainingState.load(state)
    assert not marker.exists()


DAMAGE = {
    "empty": b"",
    "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 8,
    "truncated": None,  # the first half of the real file
}


def _damage(file: Path, kind: str) -> None:
    content = DAMAGE[kind]
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2] if content is None
                     else content)


def _assert_honest(error: M3fmError, file: Path) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{file}: ")
    assert message.endswith("the checkpoint is damaged: re-download it or retrain it")


ALIGN_FILES = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
               "text_encoder/config.json"]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("name", ALIGN_FILES)
def test_a_damaged_alignment_checkpoint_file_is_named(align_dir, name, kind):
    _damage(align_dir / name, kind)
    with pytest.raises(M3fmError) as refused:
        MultiMedCLIP.from_pretrained(align_dir)
    _assert_honest(refused.value, align_dir / name)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["model.safetensors", "memory_bank.safetensors", "config.json",
                                  "metadata.json"])
def test_a_damaged_report_model_file_is_named(report_dir, name, kind):
    _damage(report_dir / name, kind)
    with pytest.raises(M3fmError) as refused:
        ReportModel.from_pretrained(report_dir)
    _assert_honest(refused.value, report_dir / name)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_metadata_is_named(report_dir, kind):
    _damage(report_dir / "metadata.json", kind)
    with pytest.raises(M3fmError) as refused:
        read_metadata(report_dir)
    _assert_honest(refused.value, report_dir / "metadata.json")


def test_the_cli_names_a_damaged_file_instead_of_an_internal_error(report_dir, tmp_path,
                                                                    capsys):
    bank = report_dir / "memory_bank.safetensors"
    _damage(bank, "truncated")
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(image)
    code, out, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "zh",
                             "--checkpoint", str(report_dir), str(image))
    assert code == 1 and out == ""
    assert err.startswith(f"m3fm: error: {bank}: ") and err.count("\n") == 1


def _generate_recipe(folder: Path, align_recipe: str) -> Path:
    recipe = load_recipe("cov-ctr-zh-zeroshot").model_dump(mode="json")
    recipe["align"]["recipe"] = align_recipe
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "generate.json"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def _align_recipe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(load_recipe("cov-ctr-align").model_dump(mode="json")))
    return path


def test_a_recipe_names_its_alignment_recipe_beside_itself_or_shipped(tmp_path):
    _align_recipe(tmp_path / "recipes" / "align.json")
    beside = load_recipe(str(_generate_recipe(tmp_path / "recipes", "align.json")))
    assert beside.align.recipe == str(tmp_path / "recipes" / "align.json")
    shipped = load_recipe(str(_generate_recipe(tmp_path / "recipes", "cov-ctr-align")))
    assert shipped.align.recipe == "cov-ctr-align"


@pytest.mark.parametrize("reference", ["../align.json", "absolute"])
def test_a_recipe_cannot_name_an_alignment_recipe_outside_its_folder(tmp_path, reference):
    outside = _align_recipe(tmp_path / "align.json")
    value = str(outside) if reference == "absolute" else reference
    path = _generate_recipe(tmp_path / "recipes", value)
    with pytest.raises(ConfigError) as refused:
        load_recipe(str(path))
    assert str(refused.value).startswith(f"{path}: align.recipe {value!r} is outside ")


def test_a_recipe_given_on_the_command_line_may_be_anywhere(tmp_path):
    outside = _align_recipe(tmp_path / "align.json")
    path = _generate_recipe(tmp_path / "recipes", "cov-ctr-align")
    assert load_recipe(str(path), {"align.recipe": str(outside)}).align.recipe == str(outside)


def test_a_clean_checkpoint_still_loads_and_nothing_is_printed(saved, capsys):
    model = ReportModel.from_pretrained(saved["report"])
    assert model.report_languages == ("zh",)
    assert capsys.readouterr().out == ""
