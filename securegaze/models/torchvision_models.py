"""ResNet-18 and MobileNetV3 gaze models from torchvision, always built from scratch.

No pretrained weights are ever requested (``weights=None``): the project runs offline.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from securegaze.models.base import BinSpec, GazeModel


class ResNet18Gaze(GazeModel):
    """torchvision ResNet-18 trunk; F ends at the 512-d global-pooled vector."""

    architecture = "resnet18"

    def __init__(self, input_size: int = 224, decoding: str = "direct", bins: BinSpec | None = None) -> None:
        super().__init__(input_size, 512, decoding, bins)
        net = tvm.resnet18(weights=None)
        net.fc = nn.Identity()
        self.trunk = net

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class MobileNetV3Gaze(GazeModel):
    """torchvision MobileNetV3 (small or large); F ends after the classifier's hidden layer."""

    architecture = "mobilenet_v3"

    def __init__(self, input_size: int = 224, variant: str = "small", decoding: str = "direct",
                 bins: BinSpec | None = None) -> None:
        if variant not in ("small", "large"):
            raise ValueError(f"mobilenet_v3 variant must be 'small' or 'large', got {variant!r}")
        build = tvm.mobilenet_v3_small if variant == "small" else tvm.mobilenet_v3_large
        net = build(weights=None)
        hidden = net.classifier[0].out_features
        super().__init__(input_size, hidden, decoding, bins)
        self.variant = variant
        # Keep Linear -> Hardswish of the classifier (dropout is pointless for regression features).
        net.classifier = nn.Sequential(net.classifier[0], net.classifier[1])
        self.trunk = net

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def config(self) -> dict:
        cfg = super().config()
        cfg["variant"] = self.variant
        return cfg
