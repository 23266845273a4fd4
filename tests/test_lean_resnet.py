"""The plain-torch ResNets load timm's state dicts unchanged and compute timm's eval forward."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

from m3fm.lean.resnet import LEAN_RESNETS, lean_resnet

# The 50-layer networks take seconds each on a small CPU; the rest share their code paths.
SLOW = {"resnet50", "resnet50d", "resnet50t"}
NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
         for name in LEAN_RESNETS]
FP32 = {"rtol": 1e-4, "atol": 1e-5}


def _timm_and_lean(name: str, in_chans: int) -> tuple[nn.Module, nn.Module]:
    """timm's model with random BN statistics and affine parameters (timm zeroes each block's
    last BN weight, which would hide a wrong residual branch), and its lean twin loaded from it."""
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    lean = lean_resnet(name, in_chans)
    lean.load_state_dict(reference.state_dict(), strict=True)
    return reference.eval(), lean.eval()


@pytest.mark.parametrize("name", NAMES)
def test_matches_timm(name):
    reference, lean = _timm_and_lean(name, 1)
    assert lean.num_features == lean.feature_dim == reference.num_features
    assert reference.head_hidden_size in (None, reference.num_features)
    # 65x67 gives odd feature maps, where the avg_down pooling's ceil_mode matters.
    for shape in ((2, 1, 64, 64), (2, 1, 65, 67)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = reference(x)
            torch.testing.assert_close(lean(x), expected, **FP32)
            torch.testing.assert_close(lean.forward_features(x),
                                       reference.forward_features(x), **FP32)
        assert expected.shape == (2, reference.num_features)


def test_three_channels():
    reference, lean = _timm_and_lean("resnet18d", 3)
    x = torch.randn(2, 3, 65, 67)
    with torch.no_grad():
        torch.testing.assert_close(lean(x), reference(x), **FP32)


def test_channels_last_and_bfloat16_autocast():
    reference, lean = _timm_and_lean("resnet10t", 1)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        lean = lean.to(memory_format=torch.channels_last)
        torch.testing.assert_close(lean(x.to(memory_format=torch.channels_last)), expected,
                                   **FP32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = lean(x)
        # bfloat16 keeps ~3 significant digits, compounded over the network's layers.
        torch.testing.assert_close(low.float(), expected, rtol=0.1, atol=0.1)


def test_unknown_name_falls_back():
    assert lean_resnet("vit_base_patch16_224", 1) is None


def test_import_needs_neither_timm_nor_torchvision():
    code = ("import sys, m3fm.lean.resnet; "
            "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
