"""A plain VGG-style CNN: a second small architecture family for cross-family model zoos.

It differs from :mod:`securegaze.models.small_cnn` where a backdoor scanner could notice: plain
3x3 conv-BN-ReLU stages that keep their resolution and then downsample (a 2x2 max-pool, or the
stage's conv at stride 2), one more conv at the smallest map, and GLOBAL average pooling into the
feature layer, where small_cnn flattens its 4x4 map. Positions survive the global pooling only
through what the convolutions (and their zero padding) wrote into the channels, as in ResNet-18 and
MobileNetV3, so the features are arranged differently from small_cnn's.
"""

from __future__ import annotations

import torch
from torch import nn

from securegaze.models.base import BinSpec, GazeModel

DOWNSAMPLING = ("maxpool", "stride")
MAX_CHANNELS = 128


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class PlainGazeCNN(GazeModel):
    """Stem: a 3x3 stride-2 conv to ``width`` channels. Stages: a conv doubling the channels (at
    most 128), then a 2x downsampling, until the map is 4x4 (8 px -> 4, so 32 px has two stages and
    64 px three). Then one conv at 4x4, global average pooling, a ``feature_dim`` linear layer with
    ReLU (F ends there) and the linear head H.

    ``downsample`` is ``"maxpool"`` (conv at stride 1, then a 2x2 max-pool: VGG) or ``"stride"``
    (the stage's conv itself at stride 2: a quarter of the conv cost, for the CPU).

    Cost at 64 px, width 16, max-pool: about 17 M multiply-adds per image, twice small_cnn's 9 M.
    """

    architecture = "plain_cnn"

    def __init__(self, input_size: int = 64, width: int = 16, feature_dim: int = 128,
                 downsample: str = "maxpool", decoding: str = "direct", bins: BinSpec | None = None) -> None:
        super().__init__(input_size, feature_dim, decoding, bins)
        if input_size < 16:
            raise ValueError(f"plain_cnn needs input_size >= 16, got {input_size}")
        if not 1 <= int(width) <= MAX_CHANNELS:
            raise ValueError(f"plain_cnn width must be in [1, {MAX_CHANNELS}], got {width}")
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"plain_cnn downsample must be one of {DOWNSAMPLING}, got {downsample!r}")
        self.width = int(width)
        self.downsample = downsample
        layers: list[nn.Module] = [_conv_bn_relu(3, self.width, stride=2)]
        channels, size = self.width, (input_size + 1) // 2
        while size > 4:
            nxt = min(channels * 2, MAX_CHANNELS)
            if downsample == "maxpool":
                layers += [_conv_bn_relu(channels, nxt), nn.MaxPool2d(2, ceil_mode=True)]
            else:
                layers.append(_conv_bn_relu(channels, nxt, stride=2))
            channels, size = nxt, (size + 1) // 2
        layers.append(_conv_bn_relu(channels, channels))
        self.conv = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc_features = nn.Linear(channels, feature_dim)
        self.act = nn.ReLU(inplace=True)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x))
        return self.act(self.fc_features(torch.flatten(x, 1)))

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(width=self.width, feature_dim=self.feature_dim, downsample=self.downsample)
        return cfg
