"""m3fm.imaging: the engine's preprocess checks, shared readers and transforms, encoder builders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import safetensors.torch
import timm
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.data import get_testdata_file

from m3fm.imaging import (
    BACKBONE_MEAN,
    BACKBONE_STD,
    FitToSquare,
    SlicePooledEncoder,
    preprocess,
    read_image,
    standardize,
    timm_encoder,
)
from m3fm.registry import EncoderOptions, InputError, M3fmError, ModalitySpec, UsageError

SLICE = (1, 8, 8)
VOLUME = (1, 2, 8, 8)


def toy_spec(load) -> ModalitySpec:
    """A minimal 2D+3D modality whose `load` the test controls."""
    return ModalitySpec(
        name="toy",
        description="test modality",
        file_types=(".png", ".nii.gz"),
        slice_shape=SLICE,
        volume_shape=VOLUME,
        load=load,
        build_encoder=lambda options: None,
        labels=("covid19",),
    )


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    Image.new("L", (8, 8)).save(path)
    return path


def one_line_error(spec: ModalitySpec, path: Path) -> str:
    with pytest.raises(InputError) as caught:
        preprocess(spec, path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- preprocess ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [SLICE, VOLUME])
def test_preprocess_returns_plain_float_tensor_of_declared_shape(png, shape):
    image = MetaTensor(torch.rand(shape))
    result = preprocess(toy_spec(lambda path: image), png)
    assert type(result) is torch.Tensor
    assert result.shape == shape and result.dtype == torch.float32


def test_missing_input_is_named(tmp_path):
    missing = tmp_path / "absent.png"
    message = one_line_error(toy_spec(lambda path: None), missing)
    assert message == f"{missing}: no such file or folder"


def test_unaccepted_file_type_names_file_type_and_accepted_types(tmp_path):
    path = tmp_path / "scan.nii"
    path.write_bytes(b"")
    message = one_line_error(toy_spec(lambda path: None), path)
    assert str(path) in message and "'toy'" in message
    assert "does not read .nii files" in message and "it reads .png, .nii.gz files" in message


def test_folder_refused_when_modality_reads_files_only(tmp_path):
    message = one_line_error(toy_spec(lambda path: None), tmp_path)
    assert message.startswith(f"{tmp_path}: modality 'toy' does not read a folder")


def test_loader_failure_becomes_one_line_input_error(png):
    def failing_load(path):
        raise OSError("image file is truncated\n(3 bytes not processed)")

    message = one_line_error(toy_spec(failing_load), png)
    assert message == (
        f"{png}: cannot read it as toy input: image file is truncated (3 bytes not processed)"
    )


@pytest.mark.parametrize(
    "produced",
    [torch.zeros(1, 9, 9), torch.zeros(SLICE, dtype=torch.float64), np.zeros(SLICE, np.float32)],
    ids=["wrong-shape", "wrong-dtype", "not-a-tensor"],
)
def test_wrong_plugin_output_is_reported_as_plugin_bug(png, produced):
    message = one_line_error(toy_spec(lambda path: produced), png)
    assert message.startswith(f"{png}: modality plugin 'toy' produced")
    assert "(1, 8, 8) or (1, 2, 8, 8)" in message and "bug in the plugin" in message


def test_non_finite_output_is_refused(png):
    image = torch.rand(SLICE)
    image[0, 0, 0] = float("nan")
    message = one_line_error(toy_spec(lambda path: image), png)
    assert message == f"{png}: image has NaN or infinite values after preprocessing"


def test_constant_output_is_refused(png):
    message = one_line_error(toy_spec(lambda path: torch.full(VOLUME, 0.25)), png)
    assert message == (
        f"{png}: image is constant (all values = 0.25) after preprocessing; nothing to encode"
    )


# --- reading and shaping --------------------------------------------------------------------


def test_read_image_reduces_colour_to_luminance_rows_first(tmp_path):
    path = tmp_path / "colour.png"
    pixels = np.zeros((6, 10, 3), np.uint8)  # 6 rows, 10 columns
    pixels[:, :5] = (255, 0, 0)
    pixels[:, 5:] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    image = read_image(path)
    assert image.shape == (1, 6, 10) and image.dtype == torch.float32
    assert image[0, 0, 0].item() == 76  # ITU-R 601 luma of pure red
    assert image[0, 0, 9].item() == 29  # ... and of pure blue


def test_read_image_applies_hu_rescale_and_inverts_monochrome1(tmp_path):
    source = Path(get_testdata_file("CT_small.dcm"))
    dataset = pydicom.dcmread(source)
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    normal = read_image(source)
    assert torch.equal(normal[0], torch.as_tensor(hounsfield, dtype=torch.float32))

    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted_path = tmp_path / "inverted.dcm"
    dataset.save_as(inverted_path)
    inverted = read_image(inverted_path)
    assert torch.allclose(inverted, normal.max() + normal.min() - normal)


def test_read_image_refuses_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="holds no DICOM files"):
        read_image(tmp_path)


def test_fit_to_square_keeps_aspect_and_pads_with_background():
    image = torch.zeros(1, 50, 100)
    image[0, 10:40, 20:80] = 1.0  # a 60 x 30 bright block
    fitted = FitToSquare(20)(image)
    assert fitted.shape == (1, 20, 20)
    rows, cols = (fitted[0] > 0.5).nonzero(as_tuple=True)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert (height, width) == (6, 12)
    assert fitted[0, :5].abs().max() == 0  # the padding is the background value


def test_fit_to_square_leaves_volume_slices_alone():
    volume = torch.arange(3.0).reshape(1, 3, 1, 1).expand(1, 3, 30, 60).clone()
    fitted = FitToSquare(16)(volume)
    assert fitted.shape == (1, 3, 16, 16)
    assert torch.allclose(fitted[0, :, 8, 8], torch.arange(3.0))


def test_standardize_uses_imagenet_grey_statistics():
    unit = torch.tensor([[[0.0, 1.0]]])
    expected = torch.tensor([[[-BACKBONE_MEAN / BACKBONE_STD, (1 - BACKBONE_MEAN) / BACKBONE_STD]]])
    assert torch.allclose(standardize()(unit), expected)


# --- encoders --------------------------------------------------------------------------------


def test_timm_encoder_maps_batch_to_pooled_features():
    encoder = timm_encoder(EncoderOptions(), default_backbone="resnet18").eval()
    assert encoder.feature_dim == 512
    with torch.no_grad():
        assert encoder(torch.randn(2, 1, 64, 64)).shape == (2, 512)


def test_feature_dim_counts_head_convolution():
    encoder = timm_encoder(EncoderOptions(backbone="mobilenetv3_small_050"), default_backbone="x")
    with torch.no_grad():
        assert encoder.eval()(torch.randn(1, 1, 64, 64)).shape == (1, encoder.feature_dim)


def test_unknown_backbone_suggests_names_and_how_to_list_them():
    with pytest.raises(UsageError) as caught:
        timm_encoder(EncoderOptions(backbone="resnet-18"), default_backbone="resnet18")
    message = str(caught.value)
    assert "unknown timm backbone 'resnet-18'" in message
    assert "resnet18" in message and "timm.list_models()" in message


def test_pretrained_local_weights_are_loaded_without_network(tmp_path):
    source = timm.create_model("resnet18", num_classes=0, in_chans=1)
    weights = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(source.state_dict(), weights)
    options = EncoderOptions(backbone="resnet18", pretrained=True, weights=weights)
    loaded = timm_encoder(options, default_backbone="resnet18")
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    assert torch.equal(loaded.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_pretrained_rgb_weights_are_adapted_to_grey(tmp_path):
    source = timm.create_model("resnet18")  # ImageNet layout: 3 input channels, 1000 classes
    weights = tmp_path / "imagenet.safetensors"
    safetensors.torch.save_file(source.state_dict(), weights)
    options = EncoderOptions(pretrained=True, weights=weights)
    loaded = timm_encoder(options, default_backbone="resnet18")
    assert torch.allclose(loaded.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))


def test_missing_weights_file_is_named(tmp_path):
    weights = tmp_path / "absent.safetensors"
    options = EncoderOptions(pretrained=True, weights=weights)
    with pytest.raises(InputError, match=f"^{weights}: no such weights file$"):
        timm_encoder(options, default_backbone="resnet18")


def test_mismatched_weights_file_is_named(tmp_path):
    weights = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"conv1.weight": torch.zeros(3, 3, 3, 3)}, weights)
    options = EncoderOptions(pretrained=True, weights=weights)
    with pytest.raises(InputError) as caught:
        timm_encoder(options, default_backbone="resnet18")
    assert str(caught.value).startswith(f"{weights}: cannot load it as resnet18 weights: ")
    assert "\n" not in str(caught.value)


def test_hub_failure_asks_for_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(M3fmError) as caught:
        timm_encoder(EncoderOptions(pretrained=True), default_backbone="resnet18")
    message = str(caught.value)
    assert "could not fetch pretrained resnet18 weights" in message
    assert "huggingface.co" in message and "local file" in message


def test_slice_pooled_encoder_averages_slice_features():
    encoder = SlicePooledEncoder(timm_encoder(EncoderOptions(), default_backbone="resnet18")).eval()
    slices = torch.randn(2, 1, 32, 32)
    volumes = torch.stack([slices, slices.flip(0)], dim=2)  # (B=2, C=1, D=2, H, W)
    with torch.no_grad():
        slice_features = encoder(slices)
        volume_features = encoder(volumes)
    assert encoder.feature_dim == 512 and slice_features.shape == (2, 512)
    assert torch.allclose(volume_features, slice_features.mean(dim=0).expand(2, -1), atol=1e-5)
    with pytest.raises(ValueError, match="expected slices"):
        encoder(torch.randn(1, 32, 32))


def test_read_image_takes_a_string_path_as_well():
    from m3fm.imaging import read_image
    from m3fm.registry import get_registry

    sample = get_registry().modality("cxr").sample_files[0]
    assert torch.equal(read_image(str(sample)), read_image(sample))
