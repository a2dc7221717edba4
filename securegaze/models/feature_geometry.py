"""Angles between penultimate features F(x) and the rows of H's weight matrix.

A backdoor lines triggered features up in a narrow cone, so the variance of these angles over a
triggered batch is tiny (docs/architecture.md section 6). The SecureGaze scanner constrains it and the adaptive
attack tries to spread it: both use these functions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

# Keeps acos away from +-1, where its gradient is infinite.
_COS_LIMIT = 1.0 - 1e-6


def feature_angles(features: torch.Tensor, head_weight: torch.Tensor) -> torch.Tensor:
    """(N, D) features and (K, D) weight rows -> (N, K) angles in radians, differentiable.

    A zero feature vector (possible after a ReLU) gets angle pi / 2 to every row.
    """
    cosine = nnf.normalize(features, dim=1, eps=1e-8) @ nnf.normalize(head_weight, dim=1, eps=1e-8).T
    return torch.acos(cosine.clamp(-_COS_LIMIT, _COS_LIMIT))


def feature_angle_variance(features: torch.Tensor, head_weight: torch.Tensor) -> torch.Tensor:
    """Scalar rad^2: population variance over the N images of each angle to a row of H, mean over rows."""
    if features.shape[0] < 2:
        raise ValueError(f"feature_angle_variance needs at least 2 feature vectors, got {features.shape[0]}")
    return feature_angles(features, head_weight).var(dim=0, correction=0).mean()
