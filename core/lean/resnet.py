"""timm's ResNets in plain torch: the same state dict, the same eval-mode forward, no timm import.

Why: `import timm` pulls in torchvision and torch._dynamo, seconds of start-up, whereas running
an image tower needs only its forward pass, with weights from our own checkpoint.  Module names,
nesting and `nn.Sequential` indices here are those of `timm.models.resnet`, so the state dict of
`timm.create_model(name, num_classes=0, in_chans=C)` loads with `strict=True`.  Only the variants
m3fm's towers use are built: no dilation, anti-aliasing, attention or drop-path (all off in
these models), and no classifier (timm's is an `nn.Identity` when `num_classes=0`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetArch:
    """The arguments timm's model function hands its `ResNet`; the rest keep timm's defaults."""

    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]
    stem_width: int = 64
    stem_type: str = ""  # "" (one 7x7 conv), "deep" or "deep_tiered" (three 3x3 convs)
    avg_down: bool = False  # shortcut downsampling by average pooling, then a stride-1 conv


_D = {"stem_width": 32, "stem_type": "deep", "avg_down": True}  # the "-d" variants
_T = {"stem_width": 32, "stem_type": "deep_tiered", "avg_down": True}  # the "-t" variants

LEAN_RESNETS: dict[str, ResNetArch] = {
    "resnet10t": ResNetArch("basic", (1, 1, 1, 1), **_T),
    "resnet14t": ResNetArch("bottleneck", (1, 1, 1, 1), **_T),
    "resnet18": ResNetArch("basic", (2, 2, 2, 2)),
    "resnet18d": ResNetArch("basic", (2, 2, 2, 2), **_D),
    "resnet26": ResNetArch("bottleneck", (2, 2, 2, 2)),
    "resnet26d": ResNetArch("bottleneck", (2, 2, 2, 2), **_D),
    "resnet26t": ResNetArch("bottleneck", (2, 2, 2, 2), **_T),
    "resnet34": ResNetArch("basic", (3, 4, 6, 3)),
    "resnet34d": ResNetArch("basic", (3, 4, 6, 3), **_D),
    "resnet50": ResNetArch("bottleneck", (3, 4, 6, 3)),
    "resnet50d": ResNetArch("bottleneck", (3, 4, 6, 3), **_D),
    "resnet50t": ResNetArch("bottleneck", (3, 4, 6, 3), **_T),
}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(inplanes, planes, 3, stride)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x)) + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, and a shortcut (ResNet-26/50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(inplanes, planes, 1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3, self.bn3 = _conv_bn(planes, planes * self.expansion, 1)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.act3(self.bn3(self.conv3(x)) + shortcut)


def _downsample(inplanes: int, outplanes: int, stride: int, avg_down: bool) -> nn.Sequential:
    """timm's `downsample_conv` (strided 1x1 conv, BN) or `downsample_avg` (pool, 1x1 conv, BN).

    `downsample_avg` keeps index 0 for the pool even where it has none (stride 1: an Identity),
    so its conv and BN are `downsample.1` and `downsample.2` in the state dict.
    """
    if not avg_down:
        return nn.Sequential(*_conv_bn(inplanes, outplanes, 1, stride))
    pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1 else nn.Identity())
    return nn.Sequential(pool, *_conv_bn(inplanes, outplanes, 1))


class LeanResNet(nn.Module):
    """timm's `ResNet` for one `ResNetArch`, returning pooled features (B, num_features).

    `forward_features`, `forward_head` and `global_pool` are named as in timm so that Grad-CAM
    (m3fm.clinical.saliency) finds the feature map before pooling as it does in a timm tower.
    """

    def __init__(self, arch: ResNetArch, in_chans: int):
        super().__init__()
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[arch.block]
        inplanes = arch.stem_width * 2 if arch.stem_type else 64
        if arch.stem_type:
            tiered = arch.stem_type == "deep_tiered"
            first = 3 * (arch.stem_width // 4) if tiered else arch.stem_width
            self.conv1 = nn.Sequential(
                *_conv_bn(in_chans, first, 3, 2), nn.ReLU(inplace=True),
                *_conv_bn(first, arch.stem_width, 3), nn.ReLU(inplace=True),
                nn.Conv2d(arch.stem_width, inplanes, 3, 1, 1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, (planes, repeats) in enumerate(zip((64, 128, 256, 512), arch.layers,
                                                      strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = _downsample(inplanes, outplanes, stride, arch.avg_down)
            blocks = [block(inplanes, planes, stride, downsample)]
            blocks += [block(outplanes, planes, 1, None) for _ in range(repeats - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            inplanes = outplanes
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = self.feature_dim = inplanes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, num_features, H/32, W/32)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def lean_resnet(name: str, in_chans: int) -> LeanResNet | None:
    """The plain-torch twin of timm's `name` with no classifier, or None where it has none
    (the caller then builds timm's)."""
    arch = LEAN_RESNETS.get(name)
    return None if arch is None else LeanResNet(arch, in_chans)
