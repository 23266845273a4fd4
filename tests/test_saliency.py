"""Saliency maps of label scores and reports: shapes, no side effects on the model, Grad-CAM as
captum computes it, the randomisation sanity check, and the PNG overlays."""

from __future__ import annotations

import statistics

import pytest
import torch
from PIL import Image

from m3fm.alignment.model import MultiMedCLIP
from m3fm.clinical import heatmaps, saliency
from m3fm.clinical.heatmaps import display_image, write_heatmaps
from m3fm.clinical.saliency import (
    METHODS,
    label_directions,
    randomisation_check,
    randomised_copy,
    saliency_maps,
)
from m3fm.data import read_records
from m3fm.diagnosis.zeroshot import PromptClassifier
from m3fm.embedding import Embedder
from m3fm.generation import load
from m3fm.imaging import preprocess
from m3fm.models import default_model_dir
from m3fm.registry import UsageError, get_registry

RANK_CORRELATION_BOUND = 0.5
"""Largest mean Spearman correlation the sanity check allows between the trained model's maps
and those of randomised copies (seeds :data:`SEEDS`), for label maps and report maps apart.

One map's correlation is noisy: the bundled tower's feature map is 4 × 4, so it varies from
-0.63 to 0.73 over randomisation seeds on the samples (and reaches 0.82 on val images), hence
means.  Measured (Grad-CAM, seeds 0-2): sample CT label -0.13, report -0.03; sample CXR labels
-0.26, report 0.14; over 8 cov-ctr and 8 covid-cxr val images (benchmark, seed 0): labels -0.12,
reports 0.31.  A map that showed the image rather than the model would correlate near 1."""
SEEDS = (0, 1, 2)
SAMPLE_REPORTS = {
    "ct": "Ground glass opacity in the lower lobe of both lungs.",
    "cxr": "Heart size is normal. The lungs are clear. No acute cardiopulmonary abnormality.",
}


@pytest.fixture(scope="module")
def model():
    return load(default_model_dir(), device="cpu")


@pytest.fixture(scope="module")
def samples(model):
    """Modality → (sample image, label directions + the report direction)."""
    registry = get_registry()
    out = {}
    for modality in ("ct", "cxr"):
        image = preprocess(registry.modality(modality), registry.modality(modality)
                           .sample_files[0])
        classifier = PromptClassifier(model, registry.modality_labels(modality), "en")
        report = model.embed_texts([SAMPLE_REPORTS[modality]], "en")[0]
        out[modality] = image, {**label_directions(classifier), "report": report}
    return out


def _two_targets(samples, modality: str = "cxr") -> dict[str, torch.Tensor]:
    targets = samples[modality][1]
    return {"effusion": targets["effusion"], "report": targets["report"]}


def _checked(maps: dict[str, torch.Tensor], names, shape) -> None:
    assert list(maps) == list(names)
    for plane in maps.values():
        assert plane.shape == shape
        assert torch.isfinite(plane).all()
        assert plane.min() >= 0 and plane.max() <= 1


def test_label_directions_are_present_minus_absent(model, samples):
    classifier = PromptClassifier(model, ("covid19",), "en")
    (direction,) = label_directions(classifier).values()
    logit = classifier.logit_scale * samples["ct"][1]["report"] @ direction
    probability = classifier.probabilities(samples["ct"][1]["report"][None])[0, 0]
    assert torch.isclose(logit.sigmoid(), probability, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_slice_maps_have_the_image_shape_in_unit_range(model, samples, method, monkeypatch):
    monkeypatch.setattr(saliency, "OCCLUSION_WINDOWS", 4)  # 49 windows: a quick occlusion
    image, _ = samples["cxr"]
    targets = _two_targets(samples)
    maps = saliency_maps(model, image, "cxr", targets, method)
    _checked(maps, targets, image.shape[1:])
    assert any(plane.max() == 1 for plane in maps.values())


@pytest.mark.parametrize("method", METHODS)
def test_volume_maps_are_per_slice(model, samples, method, monkeypatch):
    monkeypatch.setattr(saliency, "OCCLUSION_WINDOWS", 2)
    volume = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = _two_targets(samples)
    maps = saliency_maps(model, volume, "ct", targets, method)
    _checked(maps, targets, (4, 64, 64))


def test_maps_leave_the_model_as_it_was(model, samples, monkeypatch):
    monkeypatch.setattr(saliency, "OCCLUSION_WINDOWS", 2)
    image, _ = samples["cxr"]
    targets = _two_targets(samples)
    weights = {name: value.clone() for name, value in model.model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.model.named_parameters()}
    before = model.embed_images([image], "cxr", precision="fp32")
    for method in METHODS:
        saliency_maps(model, image, "cxr", targets, method)
    after = model.embed_images([image], "cxr", precision="fp32")
    assert torch.equal(before, after)
    state = model.model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in weights.items())
    assert flags == {name: p.requires_grad for name, p in model.model.named_parameters()}
    assert not model.model.training
    assert all(p.grad is None for p in model.model.parameters())


def test_train_mode_is_restored_and_batchnorm_statistics_kept(model, samples):
    fresh = randomised_copy(model)
    fresh.model.train()
    statistics = {name: value.clone() for name, value in fresh.model.state_dict().items()
                  if "running" in name}
    saliency_maps(fresh, samples["ct"][0], "ct", _two_targets(samples))
    assert all(module.training for module in fresh.model.modules())
    state = fresh.model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in statistics.items())


def test_gradcam_is_captums_layer_gradcam(model, samples):
    from captum.attr import LayerAttribution, LayerGradCam

    image, _ = samples["cxr"]
    targets = _two_targets(samples)
    maps = saliency_maps(model, image, "cxr", targets)
    directions = torch.stack(list(targets.values()))
    layer = saliency._pooling(saliency._image_tower(model.model, "cxr"))
    gradcam = LayerGradCam(lambda batch: model.model.encode_image("cxr", batch) @ directions.T,
                           layer)
    for index, name in enumerate(targets):
        with torch.enable_grad():
            reference = gradcam.attribute(image[None], target=index, relu_attributions=True,
                                          attribute_to_layer_input=True)
        reference = LayerAttribution.interpolate(reference, image.shape[1:], "bilinear")[0, 0]
        torch.testing.assert_close(maps[name], (reference / reference.max()).detach())


@pytest.mark.parametrize("backbone", ["convnext_atto", "mobilenetv3_small_050"])
def test_gradcam_finds_the_feature_map_of_other_timm_cnns(model, samples, backbone):
    maps = saliency_maps(_with_backbone(model, backbone), samples["ct"][0], "ct",
                         _two_targets(samples))
    _checked(maps, ("effusion", "report"), samples["ct"][0].shape[1:])


def test_gradcam_refuses_a_tower_without_a_feature_map_in_one_line(model, samples):
    with pytest.raises(UsageError, match="vit_tiny_patch16_224 has none") as error:
        saliency_maps(_with_backbone(model, "vit_tiny_patch16_224"), samples["ct"][0], "ct",
                      _two_targets(samples))
    assert "\n" not in str(error.value)


def test_bad_arguments_are_usage_errors(model, samples):
    image, targets = samples["ct"]
    with pytest.raises(UsageError, match="unknown saliency method 'lime'"):
        saliency_maps(model, image, "ct", targets, "lime")
    with pytest.raises(UsageError, match="got shape"):
        saliency_maps(model, image[0], "ct", targets)
    with pytest.raises(UsageError, match="costs 17² × 225"):
        saliency_maps(model, torch.zeros(1, 17, 8, 8), "ct", targets, "occlusion")


@pytest.mark.parametrize("modality", ["ct", "cxr"])
def test_randomised_model_gives_different_maps(model, samples, modality):
    image, targets = samples[modality]
    labels, report = _mean_correlations(model, [image], modality, targets)
    assert labels < RANK_CORRELATION_BOUND and report < RANK_CORRELATION_BOUND, (labels, report)


def test_randomised_model_gives_different_maps_on_validation_images(model, data_root):
    records = [record for record in read_records(data_root / "cov-ctr")
               if record.split == "val" and record.language == "en"][:3]
    spec = get_registry().modality("ct")
    classifier = PromptClassifier(model, ("covid19",), "en")
    for record in records:
        targets = {**label_directions(classifier),
                   "report": model.embed_texts([record.report], "en")[0]}
        labels, report = _mean_correlations(model, [preprocess(spec, record.image)], "ct",
                                            targets)
        assert labels < RANK_CORRELATION_BOUND and report < RANK_CORRELATION_BOUND, (
            record.id, labels, report)


def test_display_image_scales_each_slice():
    volume = torch.stack([torch.linspace(0, 1, 16).view(4, 4), torch.full((4, 4), 3.0)])[None]
    grey = display_image(volume)
    assert grey.dtype.name == "uint8" and grey.shape == (2, 4, 4)
    assert grey[0].min() == 0 and grey[0].max() == 255
    assert (grey[1] == 0).all()


def test_write_heatmaps_writes_one_png_per_target(tmp_path, samples):
    image = samples["ct"][0]
    maps = {"covid19": torch.rand(image.shape[1:]), "report": torch.zeros(image.shape[1:])}
    first = write_heatmaps(image, maps, tmp_path / "a" / "scan.png", tmp_path / "out")
    second = write_heatmaps(image, maps, tmp_path / "b" / "scan.png", tmp_path / "out")
    assert len(set(first + second)) == 4
    assert [path.name.split(".")[1] for path in first] == ["covid19", "report"]
    for path in first + second:
        with Image.open(path) as picture:
            picture.verify()
        with Image.open(path) as picture:
            assert picture.size == (image.shape[2], image.shape[1]) and picture.mode == "RGB"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        path.name for path in first + second)


def test_volume_heatmap_tiles_slices(tmp_path):
    volume = torch.randn(1, 5, 32, 48)
    (path,) = write_heatmaps(volume, {"a/b c": torch.rand(5, 32, 48)}, tmp_path / "v.nii.gz",
                             tmp_path)
    assert path.name.endswith(".a_b_c.png")
    with Image.open(path) as picture:
        assert picture.size == (3 * 48, 2 * 32)  # 5 slices: 3 columns, 2 rows


def test_write_heatmaps_is_atomic(tmp_path, monkeypatch):
    image = torch.randn(1, 16, 16)
    maps = {"covid19": torch.rand(16, 16)}
    (path,) = write_heatmaps(image, maps, tmp_path / "scan.png", tmp_path)
    before = path.read_bytes()

    def broken(self, target, *args, **kwargs):
        target.write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(heatmaps.Image.Image, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        write_heatmaps(image, {"covid19": torch.rand(16, 16)}, tmp_path / "scan.png", tmp_path)
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]


def test_write_heatmaps_refuses_colliding_target_names(tmp_path):
    maps = {"a b": torch.rand(8, 8), "a/b": torch.rand(8, 8)}
    with pytest.raises(UsageError, match="share a file name"):
        write_heatmaps(torch.randn(1, 8, 8), maps, tmp_path / "scan.png", tmp_path)


def _with_backbone(model: Embedder, backbone: str) -> Embedder:
    """`model`'s configuration with another timm image tower, freshly initialised."""
    config = model.model.config
    config = config.model_copy(update={"image": config.image.model_copy(
        update={"backbone": backbone})})
    return Embedder(MultiMedCLIP(config, model.model.tokenizer,
                                 text_encoder=model.model.text_encoder), device="cpu")


def _mean_correlations(model: Embedder, images: list[torch.Tensor], modality: str,
                       targets: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean rank correlation of the label maps and of the report map of `images`, trained
    against randomised copies of each of :data:`SEEDS`."""
    labels, report = [], []
    for seed in SEEDS:
        correlations = randomisation_check(model, images, modality, targets,
                                           randomised=randomised_copy(model, seed))
        assert len(correlations) == len(images) * len(targets)
        for name, value in zip(list(targets) * len(images), correlations, strict=True):
            (report if name == "report" else labels).append(value)
    return statistics.fmean(labels), statistics.fmean(report)
