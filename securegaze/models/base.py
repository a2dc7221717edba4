"""The gaze-model interface: every model is G = H o F.

``features(x)`` is F: images -> penultimate feature vectors; ``head(z)`` is H: features -> gaze.
The defense reads models only through this interface, so a PyTorch module built here and an ONNX
file converted back to PyTorch look the same to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# ImageNet statistics: the torchvision backbones were designed around this input scaling, and we
# keep it for the small CNN too so every model takes the same raw input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BinSpec:
    """Gaze bins of a classification-style (L2CS-Net-like) head, per angle.

    Bin ``i`` covers ``[start_deg + i*width_deg, start_deg + (i+1)*width_deg)``; the decoded
    angle is the softmax-weighted mean of bin centres, in degrees, then converted to radians.
    """

    count: int = 28
    start_deg: float = -42.0
    width_deg: float = 3.0

    def centres_deg(self) -> torch.Tensor:
        return self.start_deg + self.width_deg * (torch.arange(self.count, dtype=torch.float32) + 0.5)

    def to_dict(self) -> dict:
        return {"count": self.count, "start_deg": self.start_deg, "width_deg": self.width_deg}


def decode_bins(logits: torch.Tensor, bins: BinSpec) -> torch.Tensor:
    """(N, count) logits -> (N,) radians (soft-argmax over bin centres; differentiable)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.deg2rad((probs * bins.centres_deg().to(logits)).sum(-1))


class InputNormalize(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> standardised; lives inside the model so exports take raw input."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class GazeModel(nn.Module):
    """Base class. Subclasses set ``backbone`` (F without input scaling) and ``feature_dim``.

    Input: (N, 3, S, S) float32 RGB in [0, 1] with S = ``input_size``.
    Output of ``forward``: (N, 2) float32 (pitch, yaw) radians (see :mod:`securegaze.geometry`).

    ``decoding`` is ``"direct"`` (a linear layer regresses pitch and yaw) or ``"binned"`` (two
    linear layers give logits over gaze bins for pitch and yaw, as in L2CS-Net).
    """

    architecture = "base"

    def __init__(self, input_size: int, feature_dim: int, decoding: str = "direct", bins: BinSpec | None = None):
        super().__init__()
        if decoding not in ("direct", "binned"):
            raise ValueError(f"decoding must be 'direct' or 'binned', got {decoding!r}")
        self.input_size = int(input_size)
        self.feature_dim = int(feature_dim)
        self.decoding = decoding
        self.bins = bins or BinSpec()
        self.normalize = InputNormalize()
        if decoding == "direct":
            self.fc = nn.Linear(feature_dim, 2)
            nn.init.zeros_(self.fc.bias)
            nn.init.normal_(self.fc.weight, std=1.0 / math.sqrt(feature_dim) * 0.1)
        else:
            self.fc_pitch = nn.Linear(feature_dim, self.bins.count)
            self.fc_yaw = nn.Linear(feature_dim, self.bins.count)

    # -- F -------------------------------------------------------------------------------------
    def backbone(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F: (N, 3, S, S) in [0, 1] -> (N, feature_dim)."""
        return self.backbone(self.normalize(x))

    # -- H -------------------------------------------------------------------------------------
    def head_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binned models only: (N, D) -> ((N, count) pitch logits, (N, count) yaw logits)."""
        if self.decoding != "binned":
            raise TypeError("head_logits is only defined for binned models")
        return self.fc_pitch(z), self.fc_yaw(z)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """H: (N, feature_dim) -> (N, 2) radians."""
        if self.decoding == "direct":
            return self.fc(z)
        lp, ly = self.head_logits(z)
        return torch.stack([decode_bins(lp, self.bins), decode_bins(ly, self.bins)], dim=-1)

    def head_weight(self) -> torch.Tensor:
        """Rows of H's weight matrix, (K, feature_dim): 2 rows (direct) or 2*count (binned)."""
        if self.decoding == "direct":
            return self.fc.weight
        return torch.cat([self.fc_pitch.weight, self.fc_yaw.weight], dim=0)

    def head_linears(self) -> list[nn.Linear]:
        """H's linear layer(s) that read the features: [fc] (direct) or [fc_pitch, fc_yaw] (binned)."""
        return [self.fc] if self.decoding == "direct" else [self.fc_pitch, self.fc_yaw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def export_outputs(self, x: torch.Tensor):
        """What an exported ONNX graph returns: gaze (direct) or the two logit tensors (binned)."""
        z = self.features(x)
        if self.decoding == "direct":
            return self.head(z)
        return self.head_logits(z)

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the module with :func:`create_model`."""
        cfg = {"architecture": self.architecture, "input_size": self.input_size, "decoding": self.decoding}
        if self.decoding == "binned":
            cfg["bins"] = self.bins.to_dict()
        return cfg
