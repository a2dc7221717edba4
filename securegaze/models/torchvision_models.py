"""ResNet-18 and MobileNetV3 gaze models from torchvision, always built from scratch.

No pretrained weights are ever requested (``weights=None``): the project runs offline.

Both keep their torchvision shape by default (ImageNet-sized, meant for 224 px). For zoos of 64-px
models trained on a CPU each has a reduced option, so that one model trains in minutes rather than
an hour:

- ResNet-18 ``width``: the base channels (64 in torchvision; stages ``w, 2w, 4w, 8w``). Width 16
  has 1/16 of the conv multiply-adds and parameters (0.7 M instead of 11.2 M). ``stem="compact"``
  replaces the 7x7 stride-2 conv and the stride-2 max-pool (4x downsampling, meant for 224 px) by
  one 3x3 stride-2 conv, so a 64-px face reaches the last stage at 4x4 instead of 2x2; it costs 4x
  the multiply-adds of the ImageNet stem at the same width.
- MobileNetV3 ``width_mult``: torchvision's channel multiplier (every layer's channels, rounded to
  multiples of 8); 0.5 roughly quarters the multiply-adds of the 1x1 convs, which dominate.
  ``stem_stride=1`` runs the first conv at stride 1 (torchvision: 2), so a 64-px face reaches the
  last stage at 4x4 instead of 2x2 (16x the multiply-adds after the stem at the same width). At
  64 px it is what lets the network learn gaze in a CPU budget: width 0.5, 20,000 faces x 4 epochs,
  2 threads: 17.2 deg mean error with the stride-2 stem (57 s), 7.0 deg with stride 1 (156 s).

Every MobileNetV3 here uses PyTorch's default BatchNorm momentum (0.1) instead of torchvision's 0.01,
which is tuned for ImageNet-length runs: after the few hundred steps of a CPU run the running
statistics were still far from the batch statistics and the network in eval mode gave one constant
gaze (27 deg mean error, whatever the width; measured at 64 px, 8,000 faces x 4 epochs).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from securegaze.models.base import BinSpec, GazeModel

RESNET_STEMS = ("imagenet", "compact")
#: BatchNorm momentum of the MobileNetV3 models (see the module docstring).
MOBILENET_BN_MOMENTUM = 0.1


class _ResNet18Trunk(nn.Module):
    """ResNet-18 (BasicBlock, two per stage) with base channels ``width`` and a choice of stem.

    Module names follow torchvision's ResNet, and initialisation too (Kaiming-normal fan-out convs,
    unit BN), so a reduced model reads like the full one.
    """

    def __init__(self, width: int, stem: str) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        channels = width
        stages = []
        for index, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or channels != planes:
                downsample = nn.Sequential(nn.Conv2d(channels, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            stages.append(nn.Sequential(BasicBlock(channels, planes, stride, downsample), BasicBlock(planes, planes)))
            channels = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class ResNet18Gaze(GazeModel):
    """ResNet-18 trunk; F ends at the ``8 * width``-d global-pooled vector (512-d by default).

    The default (``width=64, stem="imagenet"``) is torchvision's ``resnet18`` itself; any other
    setting builds the same layout at that width and stem (see the module's docstring).
    """

    architecture = "resnet18"

    def __init__(self, input_size: int = 224, width: int = 64, stem: str = "imagenet",
                 decoding: str = "direct", bins: BinSpec | None = None) -> None:
        if not 1 <= int(width) <= 512:
            raise ValueError(f"resnet18 width must be in [1, 512], got {width}")
        if stem not in RESNET_STEMS:
            raise ValueError(f"resnet18 stem must be one of {RESNET_STEMS}, got {stem!r}")
        super().__init__(input_size, 8 * int(width), decoding, bins)
        self.width = int(width)
        self.stem = stem
        if self.width == 64 and stem == "imagenet":
            net = tvm.resnet18(weights=None)
            net.fc = nn.Identity()
            self.trunk: nn.Module = net
        else:
            self.trunk = _ResNet18Trunk(self.width, stem)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def config(self) -> dict:
        cfg = super().config()
        if (self.width, self.stem) != (64, "imagenet"):
            cfg.update(width=self.width, stem=self.stem)
        return cfg


class MobileNetV3Gaze(GazeModel):
    """torchvision MobileNetV3 (small or large); F ends after the classifier's hidden layer.

    ``width_mult`` scales every layer's channels (torchvision's own option); ``stem_stride`` is the
    stride of the first conv, 2 (torchvision) or 1 (see the module docstring).
    """

    architecture = "mobilenet_v3"

    def __init__(self, input_size: int = 224, variant: str = "small", width_mult: float = 1.0,
                 stem_stride: int = 2, decoding: str = "direct", bins: BinSpec | None = None) -> None:
        if variant not in ("small", "large"):
            raise ValueError(f"mobilenet_v3 variant must be 'small' or 'large', got {variant!r}")
        if not 0.1 <= float(width_mult) <= 2.0:
            raise ValueError(f"mobilenet_v3 width_mult must be in [0.1, 2.0], got {width_mult}")
        if stem_stride not in (1, 2):
            raise ValueError(f"mobilenet_v3 stem_stride must be 1 or 2, got {stem_stride}")
        build = tvm.mobilenet_v3_small if variant == "small" else tvm.mobilenet_v3_large
        net = build(weights=None, width_mult=float(width_mult))
        hidden = net.classifier[0].out_features
        super().__init__(input_size, hidden, decoding, bins)
        self.variant = variant
        self.width_mult = float(width_mult)
        self.stem_stride = int(stem_stride)
        net.features[0][0].stride = (self.stem_stride, self.stem_stride)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = MOBILENET_BN_MOMENTUM
        # Keep Linear -> Hardswish of the classifier (dropout is pointless for regression features).
        net.classifier = nn.Sequential(net.classifier[0], net.classifier[1])
        self.trunk = net

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def config(self) -> dict:
        cfg = super().config()
        cfg["variant"] = self.variant
        if self.width_mult != 1.0:
            cfg["width_mult"] = self.width_mult
        if self.stem_stride != 2:
            cfg["stem_stride"] = self.stem_stride
        return cfg
