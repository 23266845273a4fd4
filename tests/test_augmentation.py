"""Training augmentation declared by modality plugins (`ModalitySpec.augment`, plugin API 1.6):
the built-in cxr and ct augmentations, the conformance kit's check, and the seeded engine path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from alignment_fixtures import tiny_overrides, write_cov_ctr
from test_conformance import png

from m3fm.imaging import BACKBONE_MEAN, BACKBONE_STD, random_crop
from m3fm.registry import get_registry
from m3fm.registry.testing import ConformanceError, check_modality

OUTPUT_RANGE = ((0.0 - BACKBONE_MEAN) / BACKBONE_STD, (1.0 - BACKBONE_MEAN) / BACKBONE_STD)
"""What the built-in plugins' `load` produces: [0, 1] standardised."""


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def loaded_like(*shape: int) -> torch.Tensor:
    """A non-constant image in the plugins' output range, as `load` would return it."""
    low, high = OUTPUT_RANGE
    return low + (high - low) * torch.rand(*shape, generator=generator(123))


@pytest.mark.parametrize(("name", "shape"), [
    ("cxr", (1, 64, 64)), ("ct", (1, 64, 64)), ("ct", (1, 4, 32, 32))])
def test_built_in_augment_is_seeded_keeps_shape_and_input(name, shape):
    augment = get_registry().modality(name).augment
    image = loaded_like(*shape)
    original = image.clone()
    first = augment(image, generator(0))
    assert first.shape == image.shape and first.dtype == image.dtype
    assert torch.equal(image, original)
    assert torch.equal(first, augment(image, generator(0)))
    assert not torch.equal(first, augment(image, generator(1)))
    assert not torch.equal(first, image)


def test_ct_jitter_stays_in_the_output_range():
    augment = get_registry().modality("ct").augment
    low, high = OUTPUT_RANGE
    # Values at the window's edges are where the jitter pushes hardest.
    image = loaded_like(1, 4, 32, 32)
    image[..., :8] = low
    image[..., -8:] = high
    for seed in range(20):
        out = augment(image, generator(seed))
        assert out.min() >= low - 1e-5 and out.max() <= high + 1e-5


def test_ct_volume_slices_get_the_same_crop():
    augment = get_registry().modality("ct").augment
    slice_ = loaded_like(1, 1, 32, 32)
    volume = slice_.expand(1, 3, 32, 32).clone()
    out = augment(volume, generator(5))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_random_crop_of_the_sdk():
    image = loaded_like(2, 40, 48)
    cropped = random_crop(image, generator(0))
    assert cropped.shape == image.shape and torch.equal(cropped, random_crop(image, generator(0)))
    square = loaded_like(2, 40, 40)
    whole = random_crop(square, generator(0), scale=(1.0, 1.0))
    assert torch.allclose(whole, square, atol=1e-5)  # the full square is the image itself


def test_kit_checks_the_built_in_augment(tmp_path):
    for name in ("cxr", "ct"):
        passed = check_modality(get_registry().modality(name), [png(tmp_path / "x.png")], tmp_path)
        assert "augment" in passed


def test_kit_names_an_augment_that_ignores_the_generator(tmp_path):
    cxr = get_registry().modality("cxr")
    sample = [png(tmp_path / "chest.png")]
    noisy = cxr.model_copy(update={"augment": lambda image, gen: image + torch.rand(image.shape)})
    with pytest.raises(ConformanceError, match=r"augment: two generators seeded alike gave "
                       r"different .*draw every random number from the `generator` argument"):
        check_modality(noisy, sample, tmp_path)
    in_place = cxr.model_copy(update={"augment": lambda image, gen: image.mul_(1.0 + torch.rand(
        1, generator=gen).item())})
    with pytest.raises(ConformanceError, match=r"augment: it changed its .* input in place"):
        check_modality(in_place, sample, tmp_path)
    shrinking = cxr.model_copy(update={"augment": lambda image, gen: image[:, ::2]})
    with pytest.raises(ConformanceError, match=r"augment: .*return a new tensor of the input's"):
        check_modality(shrinking, sample, tmp_path)
    fixed = cxr.model_copy(update={"augment": lambda image, gen: image.flip(-1)})
    with pytest.raises(ConformanceError, match=r"augment: seeds 0 to 3 gave the same"):
        check_modality(fixed, sample, tmp_path)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from m3fm.alignment.task import AlignmentTask
    from m3fm.recipes import load_recipe

    data = write_cov_ctr(tmp_path_factory.mktemp("augment") / "data")
    overrides = dict(pair.split("=", 1) for pair in tiny_overrides(
        "data.workers=0", "data.augment=true")[1::2])
    return AlignmentTask(load_recipe("cov-ctr-align", overrides), data)


def first_step(task):
    from m3fm.alignment.data import plan_epoch

    return plan_epoch(task.pairs, epoch=0, seed=task.recipe.train.seed,
                      batch_size=task.recipe.data.batch_size)[0]


def read(task, spec, index: int) -> torch.Tensor:
    """The image of pair `index` as loaded, before any augmentation."""
    from m3fm.data.streaming import load_image

    return load_image(spec, task.pairs.image_reports[index].image, task.cache)


def test_load_images_augments_alike_for_one_epoch_and_step(task):
    step = first_step(task)
    first = task.load_images(step, (0, 0)).images
    assert torch.equal(first, task.load_images(step, (0, 0)).images)  # as in a resumed run
    assert not torch.equal(first, task.load_images(step, (1, 0)).images)  # another epoch
    # The modality's own augment, drawing from the (seed, epoch, step, pair) generator.
    spec = get_registry().modality(step.modality)
    for position, index in enumerate(step.image_reports):
        expected = spec.augment(read(task, spec, index), task._augmentation((0, 0), index))
        assert torch.equal(first[position], expected)


def test_load_images_crops_for_a_modality_without_augment(task, monkeypatch):
    step = first_step(task)
    old = get_registry().modality(step.modality).model_copy(update={"augment": None})
    monkeypatch.setattr("m3fm.alignment.task.get_registry",
                        lambda: SimpleNamespace(modality=lambda name: old))
    images = task.load_images(step, (0, 0)).images
    assert torch.equal(images, task.load_images(step, (0, 0)).images)
    for position, index in enumerate(step.image_reports):
        expected = random_crop(read(task, old, index), task._augmentation((0, 0), index))
        assert torch.equal(images[position], expected)
