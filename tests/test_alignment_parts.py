"""MultiMedCLIP's parts: losses, the epoch plan, retrieval metrics, the model and recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from alignment_fixtures import TINY_MODEL

from m3fm.alignment.config import AlignModelConfig
from m3fm.alignment.data import AlignmentPairs, ImageReport, ParallelReports, plan_epoch
from m3fm.alignment.losses import contrastive_loss, distillation_loss
from m3fm.alignment.model import MultiMedCLIP
from m3fm.alignment.retrieval import rank_metrics
from m3fm.recipes import available_recipes, load_recipe, recipe_path
from m3fm.registry import ConfigError, InputError, UnknownNameError
from m3fm.tokenizer import train_tokenizer


def test_contrastive_loss_is_low_for_matching_pairs_and_symmetric():
    a = torch.eye(4)
    assert contrastive_loss(a, a, torch.tensor(100.0)) < 1e-3
    b = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    assert torch.isclose(contrastive_loss(b, c, scale), contrastive_loss(c, b, scale))
    assert contrastive_loss(b, c, scale) > contrastive_loss(b, b, scale)


def test_placeholder_rows_take_no_part_in_the_contrastive_loss():
    """An unreadable image's row (masked out) leaves the loss of the other rows as if the
    batch had been one row smaller, and gets no gradient."""
    a = F.normalize(torch.randn(5, 8), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(5, 8), dim=-1)
    valid = torch.tensor([True, True, False, True, True])
    scale = torch.tensor(10.0)
    masked = contrastive_loss(a, b, scale, valid)
    assert torch.isclose(masked, contrastive_loss(a[valid], b[valid], scale))
    masked.backward()
    assert torch.equal(a.grad[2], torch.zeros(8))
    nothing = contrastive_loss(a, b, scale, torch.zeros(5, dtype=torch.bool))
    assert nothing.item() == 0 and torch.isfinite(nothing)


def test_distillation_moves_only_the_student():
    student = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    teacher = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    distillation_loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None
    assert distillation_loss(teacher, teacher).abs() < 1e-6


def _pairs(ct: int = 10, cxr: int = 6, parallel: int = 7) -> AlignmentPairs:
    reports = [ImageReport(Path(f"ct{i}"), "ct", "en", f"r{i}") for i in range(ct)]
    reports += [ImageReport(Path(f"cxr{i}"), "cxr", "en", f"x{i}") for i in range(cxr)]
    pairs = [ParallelReports(f"e{i}", f"z{i}", "zh") for i in range(parallel)]
    return AlignmentPairs(reports, pairs)


def test_epoch_plan_is_deterministic_and_one_modality_per_step():
    pairs = _pairs()
    plan = plan_epoch(pairs, epoch=3, seed=7, batch_size=4)
    assert plan == plan_epoch(pairs, epoch=3, seed=7, batch_size=4)
    assert plan != plan_epoch(pairs, epoch=4, seed=7, batch_size=4)
    for step in plan:
        assert {pairs.image_reports[i].modality for i in step.image_reports} == {step.modality}
        assert len(step.parallel) == len(step.image_reports)
    assert sorted(step.modality for step in plan) == ["ct", "ct", "cxr"]  # remainders dropped


def test_ranks_split_each_global_batch_evenly():
    pairs = _pairs()
    whole = plan_epoch(pairs, epoch=0, seed=1, batch_size=4)
    shards = [plan_epoch(pairs, epoch=0, seed=1, batch_size=4, rank=r, world_size=2)
              for r in range(2)]
    for step, first, second in zip(whole, *shards, strict=True):
        assert first.modality == second.modality == step.modality
        assert first.image_reports + second.image_reports == step.image_reports
        assert first.parallel + second.parallel == step.parallel


def test_parallel_batches_can_be_smaller():
    plan = plan_epoch(_pairs(), epoch=0, seed=0, batch_size=4, parallel_batch_size=2)
    assert all(len(step.parallel) == 2 for step in plan)
    assert len({i for step in plan for i in step.parallel}) == 2 * len(plan)  # cycled, no repeats


def test_batch_size_must_divide_among_processes():
    with pytest.raises(Exception, match="divisible by the 3 processes"):
        plan_epoch(_pairs(), epoch=0, seed=0, batch_size=4, world_size=3)


def test_rank_metrics_on_a_known_similarity():
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.0], [0.1, 0.2, 0.3]])
    metrics = rank_metrics(similarity)  # ranks: 1, 2, 1
    assert metrics["R@1"] == pytest.approx(2 / 3)
    assert metrics["R@5"] == 1.0 and metrics["median_rank"] == 1.0


def _tiny_config(**update) -> AlignModelConfig:
    recipe = load_recipe("cov-ctr-align", dict(pair.split("=", 1) for pair in TINY_MODEL))
    return recipe.model.model_copy(update=update)


def _tokenizer():
    return train_tokenizer(["Ground glass opacity.", "双肺未见异常。"] * 3, vocab_size=150)


def test_model_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MultiMedCLIP(_tiny_config(), _tokenizer()).eval()
    images = torch.randn(2, 1, 224, 224)
    tokens = model.tokenize(["Ground glass opacity.", "双肺未见异常。"])
    model.save_pretrained(tmp_path)
    loaded = MultiMedCLIP.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.allclose(model.encode_image("ct", images), loaded.encode_image("ct", images))
        assert torch.allclose(model.encode_text(**tokens), loaded.encode_text(**tokens))
        assert model.encode_image("ct", images).norm(dim=-1).allclose(torch.ones(2))


def test_incompatible_or_incomplete_checkpoints_are_refused(tmp_path):
    MultiMedCLIP(_tiny_config(), _tokenizer()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "config_version": 99}))
    with pytest.raises(InputError, match="incompatible config: config_version"):
        MultiMedCLIP.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(InputError, match="not an m3fm alignment checkpoint"):
        MultiMedCLIP.from_pretrained(tmp_path)


def test_pretrained_text_tower_loads_from_a_local_directory(tmp_path):
    """The load-by-name path, exercised offline with a locally saved transformers encoder."""
    from transformers import BertConfig, BertModel

    tokenizer = _tokenizer()
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64))
    encoder.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = _tiny_config()
    config = config.model_copy(
        update={"text": config.text.model_copy(update={"pretrained": str(tmp_path)})}
    )
    model = MultiMedCLIP(config, tokenizer)
    for name, parameter in encoder.named_parameters():
        assert torch.equal(model.text_encoder.get_parameter(name), parameter)


def test_shared_backbone_serves_every_modality():
    config = _tiny_config(modalities=("ct", "cxr"))
    config = config.model_copy(update={"image": config.image.model_copy(update={"shared": True})})
    model = MultiMedCLIP(config, _tokenizer())
    assert list(model.image_encoders) == ["ct"] and set(model.image_projections) == {"ct", "cxr"}
    assert model.encode_image("cxr", torch.randn(2, 1, 224, 224)).shape == (2, 16)


def test_every_shipped_recipe_validates():
    assert {"cov-ctr-align", "multidomain-align"} <= set(available_recipes())
    for name in available_recipes():
        assert load_recipe(name).name == name


def test_recipe_overrides_and_their_errors(tmp_path):
    recipe = load_recipe("cov-ctr-align", {"train.max_steps": "7", "train.warmup_steps": "0",
                                           "loss.pivot": "distill"})
    assert recipe.train.max_steps == 7 and recipe.loss.pivot == "distill"
    switched = load_recipe("cov-ctr-align", {"train.amp": "off", "data.augment": "false"})
    assert switched.train.amp == "off" and switched.data.augment is False
    with pytest.raises(ConfigError, match=r"loss\.pivot: Input should be 'contrastive' or"):
        load_recipe("cov-ctr-align", {"loss.pivot": "magic"})
    with pytest.raises(ConfigError, match=r"model\.text\.widht: Extra inputs are not permitted"):
        load_recipe("cov-ctr-align", {"model.text.widht": "3"})
    with pytest.raises(UnknownNameError, match="unknown recipe 'nope'; installed: cov-ctr-align"):
        load_recipe("nope")
    misspelt = tmp_path / "misspelt.toml"  # max_steps misspelt: also missing, named second
    misspelt.write_text((recipe_path("cov-ctr-align")).read_text().replace("max_steps", "max_step"))
    with pytest.raises(ConfigError, match=r"train\.max_step: Extra inputs are not permitted"
                                          r".* \(and 1 more\)"):
        load_recipe(str(misspelt))
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [")
    with pytest.raises(ConfigError, match=r"broken\.toml: cannot read recipe"):
        load_recipe(str(broken))


def test_recipe_files_may_be_yaml(tmp_path):
    import tomllib

    import yaml

    from m3fm.recipes import recipe_path

    data = tomllib.loads(recipe_path("cov-ctr-align").read_text())
    data["name"] = "my-align"
    path = tmp_path / "my-align.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert load_recipe(str(path)) == load_recipe("cov-ctr-align").model_copy(
        update={"name": "my-align"}
    )


def test_supervised_batches_never_mix_report_languages():
    pairs = _pairs(ct=8, cxr=0)
    pairs.image_reports += [ImageReport(Path(f"ct{i}"), "ct", "zh", f"z{i}") for i in range(8)]
    for step in plan_epoch(pairs, epoch=0, seed=0, batch_size=4):
        assert len({pairs.image_reports[i].language for i in step.image_reports}) == 1


def test_plugin_sentence_pairs_join_the_pivot_only_when_asked(tmp_path):
    from PIL import Image

    from m3fm.registry import Record, get_registry

    image = tmp_path / "slice.png"
    Image.linear_gradient("L").save(image)
    common = {"dataset": "toy", "split": "train", "group": "g1", "source": "toy"}
    records = [
        Record(id="1", modality="ct", image=image, language="en", report="No effusion.", **common),
        Record(id="2", modality=None, image=None, language="zh", report="未见积液。", **common),
    ]
    args = {"split": "train", "modalities": ["ct"], "languages": ["en", "zh"]}
    plain = AlignmentPairs.from_records(records, **args)
    with_sentences = AlignmentPairs.from_records(records, **args, plugin_sentences=True)
    shipped = get_registry().language("zh").parallel_sentences
    assert [(p.anchor, p.other) for p in plain.parallel] == [("No effusion.", "未见积液。")]
    assert len(with_sentences.parallel) == 1 + len(shipped) > 100
    assert ParallelReports("The lungs are clear.", "双肺清晰。", "zh") in with_sentences.parallel


def test_sentence_pair_files_are_read_with_line_numbered_errors(tmp_path):
    from m3fm.registry import DataFormatError
    from m3fm.sentence_pairs import read_sentence_pairs

    good = tmp_path / "pairs.tsv"
    good.write_text("# translated by hand\n\nNo effusion.\t未见积液。\n", encoding="utf-8")
    assert read_sentence_pairs(good) == (("No effusion.", "未见积液。"),)
    bad = tmp_path / "bad.tsv"
    bad.write_text("No effusion.\t未见积液。\nNo pneumothorax.\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.tsv, line 2: expected"):
        read_sentence_pairs(bad)
