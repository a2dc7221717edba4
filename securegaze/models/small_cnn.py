"""A small CNN for CPU work and tests (32-64 px inputs)."""

from __future__ import annotations

import torch
from torch import nn

from securegaze.models.base import BinSpec, GazeModel


def _conv_block(c_in: int, c_out: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def final_map_size(input_size: int) -> int:
    """Side of the small CNN's last feature map: the input halved (rounding up) until at most 4 px."""
    size = (input_size + 1) // 2
    while size > 4:
        size = (size + 1) // 2
    return size


class SmallGazeCNN(GazeModel):
    """A 5x5 stride-2 stem, then stride-2 3x3 blocks down to a 4x4 map, flattened.

    The stride-2 stem costs a third of a full-resolution one on the CPU and loses little: the
    renderer's anti-aliased edges carry sub-pixel iris positions into the 5x5 receptive field.

    The map is flattened rather than globally pooled: where the irises sit in the crop is the
    signal, and global pooling would throw the positions away.
    """

    architecture = "small_cnn"

    def __init__(self, input_size: int = 64, width: int = 24, feature_dim: int = 128,
                 decoding: str = "direct", bins: BinSpec | None = None) -> None:
        super().__init__(input_size, feature_dim, decoding, bins)
        if input_size < 16:
            raise ValueError(f"small_cnn needs input_size >= 16, got {input_size}")
        if final_map_size(input_size) != 4:
            near = [s for s in range(16, 1025, 8) if final_map_size(s) == 4]
            below = max((s for s in near if s < input_size), default=None)
            above = min(s for s in near if s > input_size)
            raise ValueError(f"small_cnn input_size {input_size} halves down to a {final_map_size(input_size)}-px "
                             "map, not the 4x4 map its head reads (ONNX cannot pool it to 4x4); take "
                             + (f"{below} or {above}" if below else f"{above}"))
        self.width = width
        layers = [_conv_block(3, width, 2, kernel=5)]
        channels, size = width, (input_size + 1) // 2
        while size > 4:
            nxt = min(channels * 2, 128)
            layers.append(_conv_block(channels, nxt, 2))
            channels, size = nxt, (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc_features = nn.Linear(channels * 16, feature_dim)
        self.act = nn.ReLU(inplace=True)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x))
        return self.act(self.fc_features(torch.flatten(x, 1)))

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(width=self.width, feature_dim=self.feature_dim)
        return cfg
